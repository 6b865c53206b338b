#!/usr/bin/env bash
# Gather the build's upstream inputs for a machine without GitHub (an air-gapped site, or a test
# machine that reaches only the package registries), into one directory outside the checkout:
#
#   spack-<commit12>.tar.gz, <repo>-<commit12>.tar.gz   the pinned trees of data/spack-stack.yaml
#                                                        (git archive of each pinned commit)
#   wheels/                                              clingo (Spack's solver) for the build
#                                                        image's Python, from the package index
#   inputs.env                                           SF_ARCHIVES, SF_ARCHIVE_SHA256S and
#                                                        SF_PYTHON_WHEELS for sf-spackenv
#   rehearsal-sources/                                   a Spack source mirror with the Slurm
#                                                        release the rehearsal stack builds
#                                                        (data/rehearsal; from Debian's source
#                                                        package: SchedMD's tag archive)
#
#   scripts/offline-inputs.sh [--dir DIR] [--git-dir NAME=BARE_GIT_DIR]... [--python-version X.Y]
#
# DIR is $SF_OFFLINE_DIR, else ${SLURM_FACTORY_CACHE_DIR:-~/.slurm-factory}/offline. A tree
# already there is kept. A missing one is archived from the bare git directory given for it
# (NAME: spack, or a repo namespace such as builtin), else fetched from its git URL at the pinned
# commit; with neither, the script says what is missing and how to provide it, and exits 1.
# Then: `set -a; source DIR/inputs.env; set +a` and sf-spackenv builds from the local copies.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${SF_OFFLINE_DIR:-${SLURM_FACTORY_CACHE_DIR:-$HOME/.slurm-factory}/offline}
python_version=3.11
declare -A git_dirs=()
while (($#)); do
    case "$1" in
        --dir) dir=$2; shift 2 ;;
        --git-dir) git_dirs[${2%%=*}]=${2#*=}; shift 2 ;;
        --python-version) python_version=$2; shift 2 ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1'; valid: --dir DIR, --git-dir NAME=DIR, --python-version X.Y" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir"
log() { printf '[offline-inputs] %s\n' "$*" >&2; }

# name, archive file and pinned commit and URL of every tree, from the stack file.
mapfile -t trees < <(python3 - <<'EOF'
import yaml
s = yaml.safe_load(open("data/spack-stack.yaml"))
def base(url):
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
print(f"spack spack-{s['spack']['commit'][:12]}.tar.gz {s['spack']['commit']} {s['spack']['git']}")
for r in s["repos"]:
    print(f"{r['namespace']} {base(r['git'])}-{r['commit'][:12]}.tar.gz {r['commit']} {r['git']}")
print(f"clingo {s['spack']['clingo']}")
EOF
)

missing=()
archives=() sums=()
for line in "${trees[@]}"; do
    read -r name file commit url <<<"$line"
    [ "$name" = clingo ] && { clingo=$file; continue; }
    out="$dir/$file"
    if [ ! -s "$out" ]; then
        prefix="${file%.tar.gz}/"
        if [ -n "${git_dirs[$name]:-}" ]; then
            log "$name: git archive $commit from ${git_dirs[$name]}"
            git --git-dir="${git_dirs[$name]}" archive --prefix="$prefix" "$commit" | gzip -n >"$out.tmp"
            mv "$out.tmp" "$out"
        else
            log "$name: fetching $commit from $url"
            tmp=$(mktemp -d)
            if git -C "$tmp" init -q && git -C "$tmp" fetch -q --depth 1 "$url" "$commit" 2>/dev/null; then
                git -C "$tmp" archive --prefix="$prefix" "$commit" | gzip -n >"$out.tmp"
                mv "$out.tmp" "$out"
            else
                missing+=("$name: $file (commit $commit of $url): give --git-dir $name=<a bare clone of $url>")
            fi
            rm -rf "$tmp"
        fi
    fi
    if [ -s "$out" ]; then
        archives+=("$name=$out")
        sums+=("$name=$(sha256sum "$out" | cut -d' ' -f1)")
    fi
done

# Wheels for the build image's Python (Debian 12's 3.11 unless told), whatever Python runs this.
if ! ls "$dir/wheels/clingo-$clingo-"*.whl >/dev/null 2>&1; then
    log "wheels: clingo==$clingo for Python $python_version"
    python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
        --python-version "$python_version" --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 --dest "$dir/wheels" "clingo==$clingo" ||
        missing+=("wheels: clingo==$clingo for Python $python_version from the package index")
fi

# The Slurm source the rehearsal stack builds (data/rehearsal's slurm recipe pins it),
# from Debian's source package, whose .orig.tar.gz is SchedMD's tag archive: fetched with a
# private apt configuration (a deb-src line for trixie on the mirror this machine uses), placed
# where Spack's source mirror layout looks for it.
slurm_orig=slurm-wlm_24.11.5.orig.tar.gz
slurm_sha256=e1a5547edd212c38b5e3230a284133f777b32746551f094aaa81cc4af375e332
# (Kept in test-sources/ by earlier versions of this script.)
[ -d "$dir/test-sources" ] && [ ! -e "$dir/rehearsal-sources" ] && mv "$dir/test-sources" "$dir/rehearsal-sources"
slurm_mirror_file="$dir/rehearsal-sources/_source-cache/archive/${slurm_sha256:0:2}/$slurm_sha256.tar.gz"
if [ ! -s "$slurm_mirror_file" ]; then
    log "Slurm source: $slurm_orig from Debian's source packages"
    apt_dir=$(mktemp -d)
    mirror_url=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror_url=${mirror_url:-http://deb.debian.org/debian}
    echo "deb-src $mirror_url trixie main" >"$apt_dir/sources.list"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl"
    apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
    # apt exits non-zero when an older revision's .dsc is gone from the pool even though the
    # .orig.tar.gz arrived: the file and its sha256 decide.
    apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || true
    (cd "$apt_dir/dl" && apt-get "${apt_opts[@]}" source --download-only slurm-wlm >/dev/null 2>&1) || true
    if [ -s "$apt_dir/dl/$slurm_orig" ] && [ "$(sha256sum "$apt_dir/dl/$slurm_orig" | cut -d' ' -f1)" = "$slurm_sha256" ]; then
        mkdir -p "$(dirname "$slurm_mirror_file")" "$dir/rehearsal-sources/slurm"
        mv "$apt_dir/dl/$slurm_orig" "$slurm_mirror_file"
        ln -f "$slurm_mirror_file" "$dir/rehearsal-sources/slurm/slurm-24-11-5-1.tar.gz"
    else
        missing+=("rehearsal-sources: $slurm_orig (sha256 $slurm_sha256) from Debian's source packages (deb-src trixie)")
    fi
    rm -rf "$apt_dir"
fi

if ((${#missing[@]})); then
    log "missing inputs (nothing else needs the network):"
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

{
    echo "# Written by scripts/offline-inputs.sh: the local copies sf-spackenv builds from."
    echo "SF_ARCHIVES=$(IFS=,; echo "${archives[*]}")"
    echo "SF_ARCHIVE_SHA256S=$(IFS=,; echo "${sums[*]}")"
    echo "SF_PYTHON_WHEELS=$dir/wheels"
    echo "SF_REHEARSAL_SOURCE_MIRROR=$dir/rehearsal-sources"
} >"$dir/inputs.env"
log "ready: $dir (inputs.env names them for sf-spackenv)"
echo "$dir"
