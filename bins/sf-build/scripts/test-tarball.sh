#!/usr/bin/env bash
# The tarball test, run by `sf-build test` on the host or in a clean container of the cell's base
# image: extract (or take an extracted prefix), load the modulefile with Lmod, check that
# `sinfo --version` reports the expected Slurm version, and that no ELF file under view/ has an
# unresolved library (`ldd` "not found", with LD_LIBRARY_PATH unset, so the RPATHs alone must do).
#
#   test-tarball.sh (--tarball FILE | --prefix DIR) --module slurm/V-TC --version V
set -o pipefail

tarball='' prefix='' module='' version=''
while (($#)); do
    case "$1" in
    --tarball) tarball=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --module) module=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$module" ] || [ -z "$version" ]; then
    echo "error: --module and --version are required" >&2
    exit 2
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Problems found after the tarball is in place are gathered, so one run reports them all.
problems=()
problem() {
    echo "problem: $*" >&2
    problems+=("$*")
}

if [ -n "$tarball" ]; then
    prefix=$(mktemp -d /tmp/sf-tarball-test.XXXXXX)
    tar -xzf "$tarball" -C "$prefix" || fail "tar could not extract $tarball"
fi
[ -d "$prefix/view" ] || fail "$prefix/view is missing: the tarball has no view/"
echo "==> extracted into $prefix" >&2

lmod_init=''
for f in /usr/share/lmod/lmod/init/bash /usr/share/lmod/lmod/init/profile /etc/profile.d/lmod.sh /etc/profile.d/z00_lmod.sh; do
    if [ -f "$f" ]; then lmod_init=$f; break; fi
done
if [ -z "$lmod_init" ] && [ "$(id -u)" -eq 0 ]; then
    echo "==> Lmod is not in this image; installing it" >&2
    if command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lmod; } >&2
    elif command -v dnf >/dev/null; then
        { dnf install -y -q epel-release || true; dnf install -y -q Lmod; } >&2
    fi
    for f in /usr/share/lmod/lmod/init/bash /usr/share/lmod/lmod/init/profile; do
        if [ -f "$f" ]; then lmod_init=$f; break; fi
    done
fi
[ -n "$lmod_init" ] || fail "Lmod is not installed here and could not be installed"
# shellcheck source=/dev/null
source "$lmod_init" || fail "sourcing $lmod_init failed"

export MODULEPATH="$prefix/modules"
export SLURM_INSTALL_PREFIX="$prefix/view"
unset LD_LIBRARY_PATH
module load "$module" || fail "module load $module failed"
module is-loaded "$module" || fail "module $module did not load"
echo "==> module $module loaded" >&2

got=''
sinfo_path=$(command -v sinfo) || fail "sinfo is not on PATH after module load"
[ "$sinfo_path" = "$prefix/view/bin/sinfo" ] || fail "sinfo resolves to $sinfo_path, not the tarball's"
if out=$(sinfo --version 2>&1); then
    echo "==> sinfo --version: $out" >&2
    got=${out#slurm }
    got=${got%%[[:space:]]*}
    case "$got" in
    "$version" | "$version".* | "$version"-*) ;;
    *) problem "sinfo reports '$out', expected Slurm $version" ;;
    esac
else
    problem "sinfo --version failed: $out"
fi

# Without the module, the RPATHs alone must find every library.
module unload "$module"
unset LD_LIBRARY_PATH
checked=0
missing=0
while IFS= read -r -d '' f; do
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" != '177ELF' ]; then continue; fi
    checked=$((checked + 1))
    if ldd_out=$(ldd "$f" 2>&1) && grep -q 'not found' <<<"$ldd_out"; then
        missing=$((missing + 1))
        echo "missing libraries in ${f#"$prefix"/}:" >&2
        grep 'not found' <<<"$ldd_out" >&2
    fi
done < <(find "$prefix/view" -type f -print0)
echo "==> ldd: $checked ELF files checked, $missing with missing libraries" >&2
((missing == 0)) || problem "$missing ELF files under view/ have libraries that are not found"
if ((${#problems[@]})); then
    fail "$(IFS=';'; echo "${problems[*]}")"
fi
echo "PASS: slurm $got from $module"
