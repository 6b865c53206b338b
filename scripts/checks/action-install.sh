#!/usr/bin/env bash
# The action's installer (scripts/action/install.sh) against releases served on 127.0.0.1, laid
# out as GitHub serves them (one folder per release tag; none for a moving tag):
# a release asset is verified against SHA256SUMS and installed; a second run reuses it; a moving
# tag (v0) installs the release its checkout's version names, and the newer one once the tag
# moves; a checksum mismatch refuses and installs nothing; the `version` input gets exactly its
# release or an error; a ref's release without an asset for this runner builds from source.
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
# install VERSION [REF [ACTION_PATH]]: run the installer as the action does (VERSION is the
# `version` input); sets out (its bin-dir) and err (its stderr).
install() {
    runs=$((runs + 1))
    local o="$work/out-$runs" rc=0 action=${3:-$root}
    : >"$o"
    env -i PATH="$PATH" HOME="$HOME" SF_ACTION_PATH="$action" SF_ACTION_VERSION="$1" \
        SF_ACTION_REF="${2:-}" SF_RELEASE_BASE_URL="http://127.0.0.1:$port" \
        RUNNER_TOOL_CACHE="$work/cache" RUNNER_TEMP="$work/tmp-$runs" GITHUB_OUTPUT="$o" \
        GITHUB_PATH="$work/path-$runs" SF_TOOLING_CARGO_PROFILE=dev CARGO_TARGET_DIR="$target_dir" \
        CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-}" \
        bash "$action/scripts/action/install.sh" 2>"$work/err-$runs" || rc=$?
    err=$(cat "$work/err-$runs")
    out=$(sed -n 's/^bin-dir=//p' "$o")
    return "$rc"
}

# checkout VERSION: the action as a moving tag's checkout at workspace version VERSION (the
# installer, and the Cargo.toml that names its release; nothing to build).
checkout() {
    local dir="$work/checkout-$1"
    mkdir -p "$dir/scripts"
    cp -r "$root/scripts/action" "$dir/scripts/"
    sed "/^\[workspace\.package\]/,/^\[/ s/^version = .*/version = \"$1\"/" "$root/Cargo.toml" >"$dir/Cargo.toml"
    echo "$dir"
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

# 3. A moving tag: its checkout names its release by version. v0 at 0.3.0 installs v0.3.0; moved
# to a 0.4.0 checkout it installs v0.4.0. No release folder is named v0, as on GitHub.
release v0.3.0 "three"
release v0.4.0 "four"
install "" v0 "$(checkout 0.3.0)" || fail "installing v0 at 0.3.0: $err"
[ "$(cat "$out/RELEASE")" = three ] || fail "v0 at 0.3.0 installed $(cat "$out/RELEASE")"
install "" v0 "$(checkout 0.4.0)" || fail "installing the moved v0: $err"
[ "$(cat "$out/RELEASE")" = four ] || fail "the moved v0 installed $(cat "$out/RELEASE")"
# This source's own version is what a moving tag of it installs.
own=$(bash scripts/action/source-version.sh)
[[ "$own" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || fail "source-version.sh printed '$own'"

# 4. A tampered asset: refused, nothing installed.
release v6.6.6 "tampered"
printf 'x' >>"$work/releases/v6.6.6/$asset"
bad=$(cut -d' ' -f1 "$work/releases/v6.6.6/SHA256SUMS")
if install v6.6.6; then fail "a tampered asset was installed"; fi
[[ "$err" == *"checksum mismatch for $asset"* ]] || fail "the refusal does not say why: $err"
[ ! -e "$work/cache/slurm-factory/release-$bad" ] || fail "the tampered release left files behind"
[ -z "$out" ] || fail "a tampered release reported a bin-dir"

# 5. The `version` input is exactly its release: without an asset for this runner, or with no
# release at all, it is an error (exit 1) and nothing is built; a value that is no release tag is
# exit 2.
release v2.0.0 "elsewhere" "slurm-factory-riscv64-unknown-linux-musl.tar.gz"
rc=0
install v2.0.0 || rc=$?
[ "$rc" = 1 ] || fail "a version input without an asset for this runner gave exit $rc: $err"
[[ "$err" == *"release v2.0.0 has no $asset"* ]] || fail "the error does not say why: $err"
[[ "$err" != *"building"* ]] || fail "a version input fell back to a source build: $err"
rc=0
install v9.9.9 || rc=$?
[ "$rc" = 1 ] || fail "a version input without a release gave exit $rc: $err"
[[ "$err" == *"release v9.9.9 could not be read"* ]] || fail "the error does not say why: $err"
for v in latest 1.2.0 v1; do
    rc=0
    install "$v" || rc=$?
    [ "$rc" = 2 ] || fail "version input '$v' gave exit $rc: $err"
    [[ "$err" == *"version '$v' is not a release tag"* ]] || fail "no reason for '$v': $err"
done

# 6. The action's own ref naming a release without an asset for this runner: this source, built.
install "" v2.0.0 || fail "the source fallback failed: $err"
[[ "$err" == *"has no $asset; building from source"* ]] || fail "no fallback reported: $err"
"$out/sf-summary" --version >/dev/null || fail "the source build did not install a runnable sf-summary"
[ ! -e "$out/RELEASE" ] || fail "the fallback installed the release's files"

echo "action-install: releases verified and cached by checksum, moving tag by version, tamper refusal, exact version input, source fallback"
