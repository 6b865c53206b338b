#!/usr/bin/env bash
# The action's installer (scripts/action/install.sh) against releases served on 127.0.0.1:
# a release asset is verified against SHA256SUMS and installed; a second run reuses it; a moved tag
# (v1) installs the release it now names; a checksum mismatch refuses and installs nothing; a
# release without an asset for this runner falls back to a build from source.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --workspace --bins -q

work=$(mktemp -d /tmp/sf-action-install.XXXXXX)
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "action-install: FAIL: $*" >&2
    exit 1
}

case "$(uname -m)" in
    x86_64 | amd64) cpu=x86_64 ;;
    aarch64 | arm64) cpu=aarch64 ;;
    *) fail "unsupported architecture $(uname -m)" ;;
esac
asset="slurm-factory-$cpu-unknown-linux-musl.tar.gz"
bins=(sf-matrix sf-spackenv sf-build sf-sign sf-publish sf-invalidate sf-summary)

# The binaries every release carries, stripped once (a release build is stripped too; debug
# builds are large and packing them again for each release is most of this check's time).
mkdir -p "$work/bins"
for b in "${bins[@]}"; do strip -o "$work/bins/$b" "$target_dir/debug/$b"; done

# release TAG NOTE [ASSET-NAME]: publish a release folder served at /TAG, its asset holding our
# binaries and a RELEASE file saying NOTE.
release() {
    local dir="$work/releases/$1" stage="$work/stage/$1" name=${3:-$asset}
    rm -rf "$dir" "$stage"
    mkdir -p "$dir" "$(dirname "$stage")"
    cp -al "$work/bins" "$stage"
    printf '%s\n' "$2" >"$stage/RELEASE"
    tar -C "$stage" -cf - . | gzip -1 >"$dir/$name"
    (cd "$dir" && sha256sum "$name" >SHA256SUMS)
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/releases"
python3 -m http.server --bind 127.0.0.1 --directory "$work/releases" "$port" >"$work/http.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
done

runs=0
# install TAG: run the installer as the action does; sets out (its bin-dir) and err (its stderr).
install() {
    runs=$((runs + 1))
    local o="$work/out-$runs" rc=0
    : >"$o"
    env -i PATH="$PATH" HOME="$HOME" SF_ACTION_PATH="$root" SF_ACTION_VERSION="$1" \
        SF_RELEASE_BASE_URL="http://127.0.0.1:$port" RUNNER_TOOL_CACHE="$work/cache" \
        RUNNER_TEMP="$work/tmp-$runs" GITHUB_OUTPUT="$o" GITHUB_PATH="$work/path-$runs" \
        SF_TOOLING_CARGO_PROFILE=dev CARGO_TARGET_DIR="$target_dir" CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-}" \
        bash scripts/action/install.sh 2>"$work/err-$runs" || rc=$?
    err=$(cat "$work/err-$runs")
    out=$(sed -n 's/^bin-dir=//p' "$o")
    return "$rc"
}

# 1. A release: verified, installed under its asset's checksum, runnable, on PATH.
release v1.0.0 "one"
install v1.0.0 || fail "installing v1.0.0: $err"
sum=$(cut -d' ' -f1 "$work/releases/v1.0.0/SHA256SUMS")
[ "$out" = "$work/cache/slurm-factory/release-$sum/$cpu-unknown-linux-musl/bin" ] || fail "bin-dir is $out"
"$out/sf-matrix" --version >/dev/null || fail "the installed sf-matrix does not run"
grep -qx "$out" "$work/path-$runs" || fail "bin-dir was not added to GITHUB_PATH"
[[ "$err" == *"checksum verified"* ]] || fail "no verification reported: $err"

# 2. Again: reused, not downloaded.
install v1.0.0 || fail "re-installing v1.0.0: $err"
[[ "$err" == *"already installed"* ]] || fail "the second install did not reuse the first: $err"

# 3. A moving tag: v1 first names one build, then another; the second install gets the second.
release v1 "first"
install v1 || fail "installing v1: $err"
first=$out
release v1 "second"
install v1 || fail "installing the moved v1: $err"
[ "$out" != "$first" ] || fail "the moved tag v1 was served from the old install"
[ "$(cat "$out/RELEASE")" = second ] || fail "the moved tag installed $(cat "$out/RELEASE")"

# 4. A tampered asset: refused, nothing installed.
release v6.6.6 "tampered"
printf 'x' >>"$work/releases/v6.6.6/$asset"
bad=$(cut -d' ' -f1 "$work/releases/v6.6.6/SHA256SUMS")
if install v6.6.6; then fail "a tampered asset was installed"; fi
[[ "$err" == *"checksum mismatch for $asset"* ]] || fail "the refusal does not say why: $err"
[ ! -e "$work/cache/slurm-factory/release-$bad" ] || fail "the tampered release left files behind"
[ -z "$out" ] || fail "a tampered release reported a bin-dir"

# 5. A release without an asset for this runner: built from this source instead.
release v2.0.0 "elsewhere" "slurm-factory-riscv64-unknown-linux-musl.tar.gz"
install v2.0.0 || fail "the source fallback failed: $err"
[[ "$err" == *"has no $asset; building from source"* ]] || fail "no fallback reported: $err"
"$out/sf-summary" --version >/dev/null || fail "the source build did not install a runnable sf-summary"
[ ! -e "$out/RELEASE" ] || fail "the fallback installed the release's files"

echo "action-install: releases verified and cached by checksum, moved tag, tamper refusal, source fallback"
