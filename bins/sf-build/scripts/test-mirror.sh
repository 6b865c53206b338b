#!/usr/bin/env bash
# Install a cell's packages from its signed build-cache mirror(s), in a clean container of the
# cell's build image, the way a user would: add the mirrors as signed binary mirrors, trust the
# keys they publish, `spack install --cache-only` the concrete specs of the build's lock file with
# signature checks on, and, for a cell that builds Slurm, ask the installed sinfo for its version.
#
# Usage: test-mirror.sh --lock FILE --mirror URL [--mirror URL]... [--version X.Y.Z]
# The verdict is one line starting with PASS: or FAIL:.
set -Eeuo pipefail

lock=""
version=""
mirrors=()
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
while (($#)); do
    case $1 in
        --lock) lock=$2 && shift 2 ;;
        --mirror) mirrors+=("$2") && shift 2 ;;
        --version) version=$2 && shift 2 ;;
        *) fail "unknown argument $1 (valid: --lock FILE, --mirror URL, --version X.Y.Z)" ;;
    esac
done
[[ -n "$lock" && -f "$lock" ]] || fail "no lock file at '$lock'"
((${#mirrors[@]})) || fail "no mirror given"
for m in "${mirrors[@]}"; do
    if [[ "$m" == file://* && ! -f "${m#file://}/v3/layout.json" ]]; then
        fail "the mirror $m is not mounted (no v3/layout.json)"
    fi
done
command -v spack >/dev/null 2>&1 ||
    fail "spack is not on PATH in this image: test in the cell's build image (sf-spackenv's Dockerfile installs Spack)"

work=$(mktemp -d)
# A user's Spack: no site or user configuration, nothing but what this script adds.
export SPACK_DISABLE_LOCAL_CONFIG=1
export SPACK_USER_CONFIG_PATH="$work/user-config"
export SPACK_USER_CACHE_PATH="$work/user-cache"
# Its own GnuPG home: the keys it trusts are the ones the mirrors publish, nothing else.
export SPACK_GNUPGHOME="$work/gnupg"

senv() { spack --env-dir "$work/env" "$@"; }

echo "==> environment from $lock" >&2
spack env create --dir "$work/env" "$lock" >&2 || fail "spack could not create an environment from $lock"
senv config add "config:install_tree:root:$work/install" >&2
n=0
for m in "${mirrors[@]}"; do
    n=$((n + 1))
    echo "==> signed mirror sf-test-$n: $m" >&2
    senv mirror add --type binary --signed "sf-test-$n" "$m" >&2 || fail "could not add the mirror $m"
done
echo "==> trusting the keys the mirrors publish" >&2
senv buildcache keys --install --trust >&2 || fail "the mirrors' signing keys could not be installed"
echo "==> spack install --cache-only (signatures checked)" >&2
senv install --cache-only >&2 || fail "installing from the signed mirror(s) failed (see above)"
count=$(senv find --format '{name}' | wc -l)
if [[ -n "$version" ]]; then
    prefix=$(senv location --install-dir slurm) || fail "slurm is not installed"
    # Slurm's clients want a configuration even for --version: a minimal one of the test's own.
    printf '%s\n' 'ClusterName=sf-version-check' 'SlurmctldHost=localhost' "PluginDir=$prefix/lib/slurm" \
        'AuthType=auth/none' 'CredType=cred/none' 'NodeName=localhost CPUs=1 State=UNKNOWN' 'PartitionName=p Nodes=ALL' \
        >"$work/slurm.conf"
    export SLURM_CONF="$work/slurm.conf"
    got=$("$prefix/bin/sinfo" --version 2>&1) || fail "$prefix/bin/sinfo --version failed: $got"
    [[ "$got" == "slurm $version" || "$got" == "slurm $version "* ]] ||
        fail "sinfo reports '$got', expected slurm $version"
    echo "PASS: $count packages installed from signed mirrors; sinfo reports $got"
else
    echo "PASS: $count packages installed from signed mirrors"
fi
