#!/usr/bin/env bash
# The rehearsal cell's base image (data/rehearsal/matrix.yaml): Debian 12 made with debootstrap
# from Debian's archive, imported into a container engine's storage. It holds Lmod, which the
# toolchains' images get from their package manager, and the runtime packages of the rehearsal
# stack's externals (data/rehearsal/spack-stack.yaml), since a tarball of that stack links to them.
#
#   scripts/lib/rehearsal-image.sh [--mirror URL] IMAGE ENGINE [ENGINE-ARG...]
#
# e.g. `scripts/lib/rehearsal-image.sh localhost/slurm-factory-rehearsal:bookworm podman`. Does
# nothing when the engine already has IMAGE made with this package list (a label records it);
# remakes it otherwise. Needs debootstrap, and root (debootstrap does).
set -euo pipefail

# The runtime side of the stack's externals, and Lmod.
packages=lmod,libjwt0,libjson-c5,liblz4-1,libhwloc15,libreadline8,libnuma1

mirror=http://deb.debian.org/debian
if [ "${1:-}" = --mirror ]; then
    mirror=$2
    shift 2
fi
if (($# < 2)); then
    echo "usage: $0 [--mirror URL] IMAGE ENGINE [ENGINE-ARG...]" >&2
    exit 2
fi
image=$1
shift

label=io.slurm-factory.rehearsal-packages
have=$("$@" image inspect --format "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
[ "$have" = "$packages" ] && exit 0
for tool in debootstrap tar; do
    command -v "$tool" >/dev/null || {
        echo "error: making the rehearsal base image $image needs $tool (Debian: apt-get install $tool)" >&2
        exit 1
    }
done
if [ "$(id -u)" != 0 ]; then
    echo "error: making the rehearsal base image $image needs root (debootstrap)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sf-rehearsal-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "making the rehearsal base image $image: debootstrap bookworm from $mirror ($packages)" >&2
if ! debootstrap --variant=minbase --include="$packages" bookworm "$work/root" "$mirror" >"$work/log" 2>&1; then
    tail -n 40 "$work/log" >&2
    echo "error: debootstrap of the rehearsal base image failed (log above)" >&2
    exit 1
fi
tar -C "$work/root" -c . | "$@" import --change "LABEL $label=$packages" - "$image" >/dev/null
