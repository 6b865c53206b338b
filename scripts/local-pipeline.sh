#!/usr/bin/env bash
# The README's main command: rehearse the tarball pipeline on this machine, on embedded defaults,
# with no cloud: a local directory as the bucket, an ephemeral signing key, no CDN, no gpg needed.
#
#   scripts/local-pipeline.sh [--out DIR] [--slurm-version V] [--toolchain T] [--engine podman|docker]
#                             [--debug]   (use a debug build, as the test command does)
#
# The chain is the workflow's: sf-matrix (one cell) -> sf-spackenv -> the build -> sf-build test ->
# sf-sign -> sf-publish -> sf-summary. Without --engine the build step packs a small built-in
# view (real ELF binaries compiled here: libslurm, sinfo, a plugin, linked with RPATHs into a padded
# build prefix) so everything after it runs for real, and the tarball test checks its version and
# libraries (--quick: the small view is no Slurm to start); with --engine the real Spack build runs
# in a container (from the offline copies in ~/.slurm-factory/offline when they are there, see
# scripts/offline-inputs.sh), and the tarball test runs a one-node cluster from it. It ends by
# verifying what landed in the bucket and printing where everything is.
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
slurm_version=25.11
toolchain=noble
engine=""
profile=release
while (($#)); do
    case "$1" in
        --out) out=$(cd "$caller" && realpath -m "$2"); shift 2 ;;
        --slurm-version) slurm_version=$2; shift 2 ;;
        --toolchain) toolchain=$2; shift 2 ;;
        --engine) engine=$2; shift 2 ;;
        --debug) profile=debug; shift ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1'; valid: --out DIR, --slurm-version V, --toolchain T, --engine E, --debug" >&2; exit 2 ;;
    esac
done

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

step "building the binaries ($profile)"
if [ "$profile" = release ]; then
    cargo build --release --bins -q
else
    cargo build --bins -q
fi
bin="$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")/$profile"
export PATH="$bin:$PATH"

rm -rf "$out"
mkdir -p "$out/bucket" "$out/results" "$out/work/dist"
echo "made by scripts/local-pipeline.sh, which empties this directory on its next run" >"$out/.sf-local-pipeline"
work="$out/work"
export SF_DESTINATION="file://$out/bucket"
export SF_CDN_URL="file://$out/bucket"
export SF_RESULTS_DIR="$out/results"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

step "sf-matrix: the tarball cell for Slurm $slurm_version on $toolchain"
sf-matrix --pipeline tarball --slurm-versions "$slurm_version" --toolchains "$toolchain" >"$work/matrix.json"
cell_field() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["include"][0]; print(eval("c"+sys.argv[2]))' "$work/matrix.json" "$1"; }
tarball_name=$(cell_field '["tarball"]["file_name"]')
tarball_key=$(cell_field '["tarball"]["key"]')
release=$(cell_field '["slurm_release"]')
# As in the workflows' cell jobs: the steps' records join the cell's row in the summary.
SF_CELL_ID=$(cell_field '["id"]')
export SF_CELL_ID
tarball="$work/dist/$tarball_name"

step "sf-spackenv: Spack environment, build recipe and modulefile"
if [ -n "$engine" ]; then
    # The build's upstream inputs: local copies when this machine has them (they were cleared with
    # the calling shell's SF_* variables above, so they are read from their one documented place).
    offline=${SLURM_FACTORY_CACHE_DIR:-$HOME/.slurm-factory}/offline
    if [ -f "$offline/inputs.env" ]; then
        echo "building from the offline copies of Spack, its repositories and clingo in $offline" >&2
        while IFS='=' read -r k v; do
            case "$k" in SF_ARCHIVES | SF_ARCHIVE_SHA256S | SF_PYTHON_WHEELS) export "$k=$v" ;; esac
        done <"$offline/inputs.env"
    else
        echo "cloning Spack and its repositories from GitHub: no offline copies in $offline (scripts/offline-inputs.sh makes them; docs/air-gapped.md)" >&2
    fi
fi
sf-spackenv --cell "$work/matrix.json" --out "$work/env" >/dev/null

if [ -n "$engine" ]; then
    step "sf-build build: the real Spack build with $engine"
    sf-build build --cell "$work/matrix.json" --env-dir "$work/env" --engine "$engine" --out "$tarball" >/dev/null
else
    step "building a small view: libslurm, sinfo and a plugin compiled here, RPATHs into a padded prefix"
    prefix="$work/build/$(printf '__spack_path_placeholder__%.0s' 1 2 3 4)/slurm-$release"
    small_view "$prefix" "$release" "$work/src"

    step "sf-build pack: the relocatable tarball"
    sf-build pack --cell "$work/matrix.json" --view "$prefix" --env-dir "$work/env" \
        --build-prefix "$prefix" --out "$tarball" >/dev/null
fi

if [ -n "$engine" ]; then
    step "sf-build test: extract elsewhere, load the module, run a one-node cluster and its jobs"
    sf-build test --cell "$work/matrix.json" --tarball "$tarball" --engine "$engine" >/dev/null
else
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
sf-publish tarball "$tarball" "$SF_DESTINATION" --cert "$work/key/public.asc" \
    --change-list "$work/changes.json" >/dev/null

step "checking what landed: signatures verify against the key, checksums match"
published="$out/bucket/$tarball_key"
sf-sign verify file "$published" --cert "$work/key/public.asc" >/dev/null
sf-sign verify sums "$(dirname "$published")" --cert "$work/key/public.asc" >/dev/null

step "sf-summary: the deployment summary"
sf-summary "$out/results" >"$out/summary.md"

cat <<DONE

The tarball pipeline ran end to end (Slurm $release, $toolchain).
  bucket        $out/bucket
  tarball       $published
  signature     $published.asc
  checksums     $(dirname "$published")/SHA256SUMS (+ .asc)
  public key    $work/key/public.asc
  change list   $work/changes.json
  records       $out/results
  summary       $out/summary.md
Verify it yourself:
  gpg --import $work/key/public.asc && gpg --verify $published.asc $published
  sha256sum -c SHA256SUMS   (in $(dirname "$published"))
DONE
