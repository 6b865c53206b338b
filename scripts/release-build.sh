#!/usr/bin/env bash
# Build the static (musl) release binaries for this machine's CPU and pack them as the release
# asset: dist/slurm-factory-<cpu>-unknown-linux-musl.tar.gz, the name scripts/action/install.sh
# downloads. Run by .github/workflows/release.yml on an x86_64 and an aarch64 runner.
#
#   scripts/release-build.sh [OUT_DIR]      (default: dist)
#
# Needs rustup, and apt for musl-tools (musl-gcc), clang/libclang (bindgen of the vendored
# OpenSSL's headers) and make/perl (OpenSSL's own build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}

cpu=$(uname -m)
case "$cpu" in
    x86_64 | aarch64) ;;
    *) echo "release binaries are built for x86_64 and aarch64, not $cpu" >&2; exit 2 ;;
esac
target="$cpu-unknown-linux-musl"

missing=()
for p in musl-tools clang libclang-dev make perl file; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target add "$target" >/dev/null

# cc looks for "<cpu>-linux-musl-gcc", which Debian and Ubuntu do not ship: their musl-tools
# has musl-gcc. bindgen runs clang for the musl target, which finds neither its own builtin
# headers (stddef.h) nor musl's without being told.
var=${target//-/_}
export "CC_$var=musl-gcc"
export "BINDGEN_EXTRA_CLANG_ARGS_$var=-isystem $(clang -print-resource-dir)/include -isystem /usr/include/$cpu-linux-musl"

cargo build --release --locked --target "$target" --bins
bins=(sf-matrix sf-spackenv sf-build sf-sign sf-publish sf-invalidate sf-summary)
for b in "${bins[@]}"; do
    # Static: no interpreter, so it runs on any Linux of this CPU.
    if file -L "target/$target/release/$b" | grep -q "dynamically linked"; then
        echo "target/$target/release/$b is not static" >&2
        exit 1
    fi
done
mkdir -p "$out"
tar -C "target/$target/release" -czf "$out/slurm-factory-$target.tar.gz" "${bins[@]}"
echo "$out/slurm-factory-$target.tar.gz"
