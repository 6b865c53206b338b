#!/usr/bin/env bash
# The README's main command: rehearse the tarball pipeline on this machine, on embedded defaults,
# with no cloud: a local directory as the bucket, an ephemeral signing key, no CDN, no gpg needed.
#
#   scripts/local-pipeline.sh [--out DIR] [--slurm-version V] [--toolchain T] [--debug | --release]
#                             [--engine podman|docker [--stack rehearsal|published]
#                              [--cache-dir DIR] [--engine-arg A]... [--run-arg A]...
#                              [--image-build-arg A]...]
#
# The chain is the workflow's: sf-matrix (one cell) -> sf-spackenv -> the build -> sf-build test ->
# sf-sign -> sf-publish -> sf-summary, ending with a check of what landed in the bucket.
#
# Without --engine the build step packs a small built-in view (real ELF binaries compiled here:
# libslurm, sinfo, a plugin, linked with RPATHs into a padded build prefix), so everything after
# it runs for real in a minute; the tarball test checks its version and libraries (--quick: the
# small view is no Slurm to start).
#
# With --engine the real Spack builds the real Slurm in a container, and the tarball test runs a
# one-node cluster from it (slurmctld, slurmd, srun, sbatch) before anything is signed. Which
# stack it builds (it says which):
#   rehearsal   (the default when the offline inputs are there: scripts/offline-inputs.sh, in
#               ${SLURM_FACTORY_CACHE_DIR:-~/.slurm-factory}/offline) data/rehearsal: Slurm
#               24.11.5 on Debian 12, from a base image made here with debootstrap and sources
#               from the offline copies; nothing but Debian's packages comes from the network.
#               Needs root and debootstrap for the base image. About 8 minutes on 2 cores the first time.
#   published   (the default otherwise) the published stack and support matrix, as the
#               workflows build them: base images, GitHub and Spack's source mirror must be
#               reachable.
# --cache-dir is the Spack binary cache the build reuses and fills (sf-build's default,
# ~/.slurm-factory, unless given), so a second run builds nothing. --engine-arg, --run-arg and
# --image-build-arg go to sf-build as they are: a host whose limits are below Podman's defaults
# needs e.g. --run-arg=--ulimit=nofile=20000:20000 --run-arg=--ulimit=nproc=32768:32768.
#
# The binaries are built with cargo's `rehearsal` profile (optimised, quicker to build than
# `release`); --release builds the shipped profile, --debug the test suite's.
#
# --out (default out/local-pipeline in the checkout) is emptied first, so it must be new, empty,
# or a directory this script made before (it leaves a .sf-local-pipeline file there); anything
# else is refused. Only the defaults count: SF_* and GPG_* variables of the calling shell (a
# pinned fingerprint, a key, a destination) are cleared.
set -euo pipefail
caller=$(pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
for v in $(compgen -e); do
    case "$v" in SF_* | GPG_*) unset "$v" ;; esac
done
# shellcheck source=scripts/lib/small-view.sh
source scripts/lib/small-view.sh

out="$root/out/local-pipeline"
slurm_version=""
toolchain=""
engine=""
stack=""
cache_dir=""
engine_flags=()
profile=rehearsal
offline=${SLURM_FACTORY_CACHE_DIR:-$HOME/.slurm-factory}/offline
while (($#)); do
    case "$1" in
        --out) out=$(cd "$caller" && realpath -m "$2"); shift 2 ;;
        --slurm-version) slurm_version=$2; shift 2 ;;
        --toolchain) toolchain=$2; shift 2 ;;
        --engine) engine=$2; shift 2 ;;
        --stack) stack=$2; shift 2 ;;
        --cache-dir) cache_dir=$(cd "$caller" && realpath -m "$2"); shift 2 ;;
        --engine-arg | --run-arg | --image-build-arg) engine_flags+=("$1=$2"); shift 2 ;;
        --engine-arg=* | --run-arg=* | --image-build-arg=*) engine_flags+=("$1"); shift ;;
        --debug) profile=dev; shift ;;
        --release) profile=release; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1'; valid: --out DIR, --slurm-version V, --toolchain T, --engine E, --stack S, --cache-dir DIR, --engine-arg A, --run-arg A, --image-build-arg A, --debug, --release" >&2; exit 2 ;;
    esac
done
case "$engine" in
    "" | podman | docker) ;;
    *) echo "error: --engine $engine: valid engines are podman and docker" >&2; exit 2 ;;
esac
if [ -z "$engine" ] && { [ -n "$stack" ] || [ -n "$cache_dir" ] || ((${#engine_flags[@]})); }; then
    echo "error: --stack, --cache-dir, --engine-arg, --run-arg and --image-build-arg need --engine (without it nothing is built in a container)" >&2
    exit 2
fi
if [ -n "$engine" ] && [ -z "$stack" ]; then
    if grep -q '^SF_REHEARSAL_SOURCE_MIRROR=' "$offline/inputs.env" 2>/dev/null; then stack=rehearsal; else stack=published; fi
fi
matrix_args=()
case "$stack" in
    "" | published) slurm_version=${slurm_version:-25.11}; toolchain=${toolchain:-noble} ;;
    rehearsal)
        # The rehearsal matrix has one cell: anything else is not what this stack builds.
        if [ "${slurm_version:-24.11}" != 24.11 ] || [ "${toolchain:-bookworm}" != bookworm ]; then
            echo "error: the rehearsal stack builds Slurm 24.11 on bookworm only (data/rehearsal/matrix.yaml); for another cell use --stack published" >&2
            exit 2
        fi
        slurm_version=24.11 toolchain=bookworm
        matrix_args=(--matrix-file "$root/data/rehearsal/matrix.yaml")
        ;;
    *) echo "error: --stack $stack: valid stacks are rehearsal and published" >&2; exit 2 ;;
esac

# Refused before anything is built or removed: a directory this script did not make. Its own
# have the marker, or (made before there was one) nothing but what it writes.
ours() {
    [ -e "$1/.sf-local-pipeline" ] && return 0
    local e
    for e in "$1"/* "$1"/.[!.]*; do
        [ -e "$e" ] || continue
        case "${e##*/}" in bucket | results | work | summary.md) ;; *) return 1 ;; esac
    done
}
if [ -e "$out" ] && { [ ! -d "$out" ] || ! ours "$out"; }; then
    echo "error: --out $out is not empty and was not made by this script, which empties it first; give a new or empty directory" >&2
    exit 2
fi

step() { printf '\n==> %s\n' "$*" >&2; }

# Cargo's own progress shows: the first build compiles a few hundred crates (minutes on a small
# machine, see the README); later runs take seconds.
step "building the binaries (cargo profile $profile)"
cargo build --profile "$profile" --bins
bin="$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")/$profile"
[ "$profile" = dev ] && bin="$(dirname "$bin")/debug"
export PATH="$bin:$PATH"

export SF_DESTINATION="file://$out/bucket"
export SF_CDN_URL="file://$out/bucket"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# The cell first: a Slurm version or toolchain the matrix does not have is refused (exit 2)
# before --out is touched.
step "sf-matrix: the tarball cell for Slurm $slurm_version on $toolchain"
cell_json=$(sf-matrix --pipeline tarball --slurm-versions "$slurm_version" --toolchains "$toolchain" "${matrix_args[@]}")

rm -rf "$out"
mkdir -p "$out/bucket" "$out/results" "$out/work/dist"
echo "made by scripts/local-pipeline.sh, which empties this directory on its next run" >"$out/.sf-local-pipeline"
work="$out/work"
printf '%s\n' "$cell_json" >"$work/matrix.json"
export SF_RESULTS_DIR="$out/results"

cell_field() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["include"][0]; print(eval("c"+sys.argv[2]))' "$work/matrix.json" "$1"; }
tarball_name=$(cell_field '["tarball"]["file_name"]')
tarball_key=$(cell_field '["tarball"]["key"]')
release=$(cell_field '["slurm_release"]')
# As in the workflows' cell jobs: the steps' records join the cell's row in the summary.
SF_CELL_ID=$(cell_field '["id"]')
export SF_CELL_ID
tarball="$work/dist/$tarball_name"

step "sf-spackenv: Spack environment, build recipe and modulefile"
spackenv_args=()
build_args=()
[ -n "$cache_dir" ] && build_args+=(--cache-dir "$cache_dir")
case "$stack" in
    rehearsal)
        # Spack and builtin from the offline copies, the rehearsal recipe from this checkout (as
        # an archive of the kind the stack takes), Slurm's source from the offline source mirror.
        echo "building the rehearsal stack (data/rehearsal: Slurm 24.11.5 on Debian 12) from the offline copies in $offline" >&2
        archives=() sums=()
        while IFS='=' read -r k v; do
            case "$k" in
                SF_ARCHIVES | SF_ARCHIVE_SHA256S)
                    for pair in ${v//,/ }; do
                        case "${pair%%=*}" in spack | builtin) [ "$k" = SF_ARCHIVES ] && archives+=("$pair") || sums+=("$pair") ;; esac
                    done
                    ;;
                SF_PYTHON_WHEELS) spackenv_args+=(--python-wheels "$v") ;;
                SF_REHEARSAL_SOURCE_MIRROR) spackenv_args+=(--source-mirror "$v") ;;
            esac
        done <"$offline/inputs.env"
        repo="$work/slurm-factory-rehearsal-repo.tar.gz"
        tar -C "$root/data/rehearsal" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
            --transform 's,^,slurm-factory-rehearsal-repo/,' -c spack_repo | gzip -n >"$repo"
        archives+=("slurm_factory=$repo")
        sums+=("slurm_factory=$(sha256sum "$repo" | cut -d' ' -f1)")
        for a in "${archives[@]}"; do spackenv_args+=(--archive "$a"); done
        for a in "${sums[@]}"; do spackenv_args+=(--archive-sha256 "$a"); done
        spackenv_args+=(--matrix-file "$root/data/rehearsal/matrix.yaml" --stack-file "$root/data/rehearsal/spack-stack.yaml")
        ;;
    published)
        # The build's upstream inputs: local copies when this machine has them (they were
        # cleared with the calling shell's SF_* variables above, so they are read from their one
        # documented place).
        if [ -f "$offline/inputs.env" ]; then
            echo "building the published stack from the offline copies of Spack, its repositories and clingo in $offline (sources and base images from the network)" >&2
            while IFS='=' read -r k v; do
                case "$k" in SF_ARCHIVES | SF_ARCHIVE_SHA256S | SF_PYTHON_WHEELS) export "$k=$v" ;; esac
            done <"$offline/inputs.env"
        else
            echo "building the published stack, cloning Spack and its repositories from GitHub: no offline copies in $offline (scripts/offline-inputs.sh makes them; docs/air-gapped.md)" >&2
        fi
        ;;
esac
sf-spackenv --cell "$work/matrix.json" --out "$work/env" "${spackenv_args[@]}" >/dev/null

if [ -n "$engine" ]; then
    if [ "$stack" = rehearsal ]; then
        step "the rehearsal base image (Debian 12 by debootstrap, made once per engine storage)"
        base_image=$(cell_field '["base_image"]')
        engine_cmd=("$engine")
        for f in "${engine_flags[@]}"; do
            case "$f" in --engine-arg=*) engine_cmd+=("${f#--engine-arg=}") ;; esac
        done
        bash scripts/lib/rehearsal-image.sh "$base_image" "${engine_cmd[@]}"
    fi
    step "sf-build build: the real Spack build with $engine"
    sf-build build --cell "$work/matrix.json" --env-dir "$work/env" --engine "$engine" \
        "${engine_flags[@]}" "${build_args[@]}" --out "$tarball" >/dev/null

    step "sf-build test: extract elsewhere, load the module, run a one-node cluster and its jobs"
    sf-build test --cell "$work/matrix.json" --tarball "$tarball" --engine "$engine" \
        "${engine_flags[@]}" >/dev/null
else
    step "building a small view: libslurm, sinfo and a plugin compiled here, RPATHs into a padded prefix"
    prefix="$work/build/$(printf '__spack_path_placeholder__%.0s' 1 2 3 4)/slurm-$release"
    small_view "$prefix" "$release" "$work/src"

    step "sf-build pack: the relocatable tarball"
    sf-build pack --rehearsal --cell "$work/matrix.json" --view "$prefix" --env-dir "$work/env" \
        --build-prefix "$prefix" --out "$tarball" >/dev/null

    # The small view is no Slurm: no daemons to start, so only the version and library checks.
    step "sf-build test --quick: extract elsewhere, load the module, sinfo --version, ldd (the small view runs no cluster)"
    sf-build test --cell "$work/matrix.json" --tarball "$tarball" --local --quick >/dev/null
fi

step "sf-sign key generate: an ephemeral signing key, only for this run"
mkdir -p "$work/key" && chmod 700 "$work/key"
env -u GPG_PASSPHRASE sf-sign key generate --out "$work/key/secret.asc" --public-out "$work/key/public.asc" \
    --uid "Slurm Factory local rehearsal <rehearsal@example.invalid>" --expires 1d >/dev/null

step "sf-sign: the tarball's .asc and the folder's signed SHA256SUMS"
sf-sign file "$tarball" --key-file "$work/key/secret.asc" >/dev/null
sf-sign sums "$work/dist" --key-file "$work/key/secret.asc" >/dev/null

step "sf-publish: tarball, signature and SHA256SUMS into the local bucket"
sf-publish tarball "$tarball" "$SF_DESTINATION" --cert "$work/key/public.asc" "${matrix_args[@]}" \
    --change-list "$work/changes.json" >/dev/null

# As someone holding only the bucket would: with the key it publishes in keys/, found by sf-sign.
step "checking what landed: signatures verify with the key the bucket publishes, checksums match"
published="$out/bucket/$tarball_key"
sf-sign verify file "$published" >/dev/null
sf-sign verify sums "$(dirname "$published")" >/dev/null

step "sf-summary: the deployment summary"
sf-summary "$out/results" >"$out/summary.md"

cat <<DONE

The tarball pipeline ran end to end (Slurm $release, $toolchain).
  bucket        $out/bucket
  tarball       $published
  signature     $published.asc
  checksums     $(dirname "$published")/SHA256SUMS (+ .asc)
  public key    $out/bucket/keys/signing-key.asc (fingerprint in signing-key.fingerprint)
  change list   $work/changes.json
  records       $out/results
  summary       $out/summary.md
Verify it yourself:
  gpg --import $out/bucket/keys/signing-key.asc && gpg --verify $published.asc $published
  sha256sum -c SHA256SUMS   (in $(dirname "$published"))
DONE
