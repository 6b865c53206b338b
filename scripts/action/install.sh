#!/usr/bin/env bash
# Install the sf-* binaries for this runner: from the GitHub release matching the action's ref,
# verified against the release's SHA256SUMS before anything runs (a mismatch refuses), or, when no
# release asset fits, built from the action's own source with cargo.
#
# Inputs (env): SF_ACTION_VERSION (optional tag), SF_ACTION_REF, SF_ACTION_REPOSITORY,
# SF_ACTION_PATH, RUNNER_TOOL_CACHE/RUNNER_TEMP, GITHUB_PATH, GITHUB_OUTPUT, GH_TOKEN (masked by
# the runner). SF_RELEASE_BASE_URL overrides where releases are downloaded from (tests).
set -euo pipefail

fail() { echo "::error title=slurm-factory install::$*" >&2; exit 1; }

version=${SF_ACTION_VERSION:-${SF_ACTION_REF:-}}
repository=${SF_ACTION_REPOSITORY:-vantagecompute/slurm-factory}
action_path=${SF_ACTION_PATH:?SF_ACTION_PATH is required}

case "$(uname -s)" in
    Linux) os=unknown-linux-musl ;;
    *) fail "unsupported runner OS $(uname -s); the binaries are built for Linux" ;;
esac
case "$(uname -m)" in
    x86_64 | amd64) cpu=x86_64 ;;
    aarch64 | arm64) cpu=aarch64 ;;
    *) fail "unsupported runner architecture $(uname -m); valid: x86_64, aarch64" ;;
esac
target="$cpu-$os"
asset="slurm-factory-$target.tar.gz"

cache_root=${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-/tmp}}/slurm-factory
dest="$cache_root/${version:-source}/$target"
bin_dir="$dest/bin"

from_release() {
    [[ "$version" =~ ^v[0-9]+(\.[0-9]+){0,2}([-.+][0-9A-Za-z.-]+)?$ ]] || return 1
    local base=${SF_RELEASE_BASE_URL:-https://github.com/$repository/releases/download}/$version
    local work
    work=$(mktemp -d)
    local auth=()
    [ -z "${GH_TOKEN:-}" ] || auth=(-H "Authorization: Bearer $GH_TOKEN")
    if ! curl -fsSL --retry 3 "${auth[@]}" -o "$work/SHA256SUMS" "$base/SHA256SUMS"; then
        rm -rf "$work"
        return 1
    fi
    if ! grep -q "  $asset\$" "$work/SHA256SUMS"; then
        echo "release $version has no $asset; building from source instead" >&2
        rm -rf "$work"
        return 1
    fi
    curl -fsSL --retry 3 "${auth[@]}" -o "$work/$asset" "$base/$asset" || fail "downloading $asset from $base failed"
    # Verify before anything from the archive runs: a mismatch is fatal, never a fallback.
    if ! (cd "$work" && grep "  $asset\$" SHA256SUMS | sha256sum -c --status -); then
        rm -rf "$work"
        fail "checksum mismatch for $asset of release $version: refusing to run it"
    fi
    mkdir -p "$bin_dir"
    tar -xzf "$work/$asset" -C "$bin_dir" --no-same-owner
    rm -rf "$work"
    echo "installed slurm-factory $version ($target) from the release, checksum verified" >&2
}

from_source() {
    command -v cargo >/dev/null || fail "no release asset fits $version/$target and cargo is not installed to build from source"
    echo "building slurm-factory from $action_path with cargo" >&2
    local crate
    for crate in "$action_path"/bins/sf-*; do
        cargo install --locked --quiet --root "$dest" --path "$crate"
    done
}

if [ ! -x "$bin_dir/sf-matrix" ]; then
    from_release || from_source
fi
for b in sf-matrix sf-spackenv sf-build sf-sign sf-publish sf-invalidate sf-summary; do
    [ -x "$bin_dir/$b" ] || fail "$b is missing from $bin_dir"
done
echo "$bin_dir" >>"${GITHUB_PATH:-/dev/null}"
echo "bin-dir=$bin_dir" >>"${GITHUB_OUTPUT:-/dev/null}"
