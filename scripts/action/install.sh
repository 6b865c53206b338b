#!/usr/bin/env bash
# Install the sf-* binaries for this runner from a GitHub release, verified against the release's
# SHA256SUMS before anything runs (a mismatch refuses), or build them from the action's own source.
#
# Which release:
#   - the `version` input (SF_ACTION_VERSION), a release tag such as v1.2.0: exactly that release,
#     or an error (exit 2 for a value that is not a release tag, 1 when it cannot be installed);
#     never something else in its place;
#   - else the action's ref (SF_ACTION_REF): a release tag names its release; a moving tag (v1,
#     v1.2) names the release its checkout is, the workspace version in the action's Cargo.toml
#     (scripts/action/source-version.sh), which release.yml keeps equal to the tag. When that
#     release has no asset for this runner (or none answers), and for a branch or a commit, the
#     binaries are built from the action's source, which is the same code.
#
# Inputs (env): SF_ACTION_VERSION, SF_ACTION_REF, SF_ACTION_REPOSITORY, SF_ACTION_PATH,
# RUNNER_TOOL_CACHE/RUNNER_TEMP, GITHUB_PATH, GITHUB_OUTPUT. SF_RELEASE_BASE_URL overrides where
# releases are downloaded from (tests). Release downloads are public: no token is sent.
# Source builds: CARGO_TARGET_DIR is reused when set (else a target directory kept in the tool
# cache); SF_TOOLING_CARGO_PROFILE picks the cargo profile (default release; `dev` for rehearsals
# that already have a debug build).
set -euo pipefail

fail() { echo "::error title=slurm-factory install::$*" >&2; exit 1; }
bad_input() { echo "::error title=slurm-factory install::$*" >&2; exit 2; }

repository=${SF_ACTION_REPOSITORY:-vantagecompute/slurm-factory}
action_path=${SF_ACTION_PATH:?SF_ACTION_PATH is required}

# A release's tag: v, three numbers, an optional pre-release or build suffix.
release_tag_re='^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$'
# exact=1: only the named release will do (the `version` input).
exact=0
version=""
if [ -n "${SF_ACTION_VERSION:-}" ]; then
    [[ "$SF_ACTION_VERSION" =~ $release_tag_re ]] ||
        bad_input "version '$SF_ACTION_VERSION' is not a release tag; give one such as v1.2.0, or leave it empty for the action's own ref"
    version=$SF_ACTION_VERSION
    exact=1
elif [[ "${SF_ACTION_REF:-}" =~ $release_tag_re ]]; then
    version=$SF_ACTION_REF
elif [[ "${SF_ACTION_REF:-}" =~ ^v[0-9]+(\.[0-9]+)?$ ]]; then
    # A moving tag: the release is the one its checkout's version names, if that fits the tag
    # (v1 -> v1.x.y, v1.2 -> v1.2.y).
    if own=$(bash "$action_path/scripts/action/source-version.sh" "$action_path") &&
        [[ "$own" == "$SF_ACTION_REF".* ]]; then
        version=$own
    else
        echo "the action's source (${own:-no version}) is not a release of $SF_ACTION_REF; building it" >&2
    fi
fi
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

# from_release: install the release's asset for this runner, setting bin_dir. The cache is keyed
# by the asset's checksum, not the tag: a release replaced under the same tag is installed
# afresh, never served from an older build. Returns 1 when the release has no asset for this
# runner (or no release answers), so the caller builds from source; for the `version` input that
# is an error instead.
from_release() {
    local base=${SF_RELEASE_BASE_URL:-https://github.com/$repository/releases/download}/$version
    local work sum
    work=$(mktemp -d)
    if ! curl -fsSL --retry 3 -o "$work/SHA256SUMS" "$base/SHA256SUMS"; then
        rm -rf "$work"
        ((!exact)) || fail "release $version could not be read ($base/SHA256SUMS); check the version input names a published release"
        echo "no release $version answers; building from source instead" >&2
        return 1
    fi
    sum=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1; exit }' "$work/SHA256SUMS")
    if ! [[ "$sum" =~ ^[0-9a-f]{64}$ ]]; then
        rm -rf "$work"
        ((!exact)) || fail "release $version has no $asset for this runner"
        echo "release $version has no $asset; building from source instead" >&2
        return 1
    fi
    bin_dir="$cache_root/release-$sum/$target/bin"
    if installed "$bin_dir"; then
        rm -rf "$work"
        echo "slurm-factory $version ($target) already installed from the release, checksum $sum" >&2
        return 0
    fi
    curl -fsSL --retry 3 -o "$work/$asset" "$base/$asset" || fail "downloading $asset from $base failed"
    # Verify before anything from the archive runs: a mismatch is fatal, never a fallback.
    if ! (cd "$work" && printf '%s  %s\n' "$sum" "$asset" | sha256sum -c --status -); then
        rm -rf "$work"
        fail "checksum mismatch for $asset of release $version: refusing to run it"
    fi
    # Unpacked beside the final folder, then renamed: a half-extracted tree is never "installed".
    mkdir -p "$(dirname "$bin_dir")"
    local staging
    staging=$(mktemp -d "$(dirname "$bin_dir")/.bin.XXXXXX")
    tar -xzf "$work/$asset" -C "$staging" --no-same-owner
    rm -rf "$work"
    installed "$staging" || { rm -rf "$staging"; fail "the $asset of release $version lacks some of ${binaries[*]}"; }
    mv -T "$staging" "$bin_dir" 2>/dev/null || rm -rf "$staging" # another job got there first
    echo "installed slurm-factory $version ($target) from the release, checksum verified" >&2
}

# The commit the action's source is exactly at: a clean git checkout's HEAD, or the full commit
# SHA the action was pinned to (the runner downloads those without .git). Nothing when unknown or
# changed: only a source known to be one commit may keep its build across jobs under its name.
source_commit() {
    local commit
    # (the action's own checkout, not some repository it happens to sit in)
    if [ "$(git -C "$action_path" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$action_path" && pwd -P)" ] &&
        commit=$(git -C "$action_path" rev-parse --verify -q HEAD 2>/dev/null); then
        [ -z "$(git -C "$action_path" status --porcelain --untracked-files=no 2>/dev/null)" ] || return 1
        echo "$commit"
    elif [[ "${SF_ACTION_REF:-}" =~ ^[0-9a-f]{40}$ ]]; then
        echo "$SF_ACTION_REF"
    else
        return 1
    fi
}

from_source() {
    command -v cargo >/dev/null || fail "no release asset fits ${version:-this ref}/$target and cargo is not installed to build from source"
    local profile=${SF_TOOLING_CARGO_PROFILE:-release}
    [[ "$profile" =~ ^[A-Za-z0-9_-]+$ ]] || fail "SF_TOOLING_CARGO_PROFILE '$profile' is not a cargo profile name (release, dev, ...)"
    local out=$profile
    [ "$profile" != dev ] || out=debug
    # One cargo build of the whole workspace (not a cargo install per binary): cargo itself decides
    # what is stale, so a kept or shared target directory makes this quick.
    local target_dir=${CARGO_TARGET_DIR:-$cache_root/target}
    echo "building slurm-factory from $action_path with cargo (profile $profile, target $target_dir)" >&2
    cargo build --locked --quiet --bins --profile "$profile" \
        --manifest-path "$action_path/Cargo.toml" --target-dir "$target_dir"
    mkdir -p "$bin_dir"
    local b
    for b in "${binaries[@]}"; do
        # Copied, then renamed into place: a job still running the old file keeps it.
        cp "$target_dir/$out/$b" "$bin_dir/.$b.$$"
        mv -f "$bin_dir/.$b.$$" "$bin_dir/$b"
    done
}

binaries=(sf-matrix sf-spackenv sf-build sf-sign sf-publish sf-invalidate sf-summary)
installed() { # installed DIR: every binary is there
    local b
    for b in "${binaries[@]}"; do [ -x "$1/$b" ] || return 1; done
}

bin_dir=""
if [ -z "$version" ] || ! from_release; then
    # A build from source is never kept under a ref's name (a branch moves): under the commit when
    # the source is exactly a commit, else only for this job.
    if commit=$(source_commit); then
        bin_dir="$cache_root/source-$commit/$target/bin"
    else
        bin_dir="${RUNNER_TEMP:-$(mktemp -d)}/slurm-factory/$target/bin"
    fi
    installed "$bin_dir" || from_source
fi
for b in "${binaries[@]}"; do
    [ -x "$bin_dir/$b" ] || fail "$b is missing from $bin_dir"
done
echo "$bin_dir" >>"${GITHUB_PATH:-/dev/null}"
echo "bin-dir=$bin_dir" >>"${GITHUB_OUTPUT:-/dev/null}"
