#!/usr/bin/env bash
# Print the release tag of a source tree: "v" and the workspace version in its Cargo.toml. A
# release's tag is exactly this (release.yml refuses a tag that is not), so a checkout of a moving
# tag (v1) names the release it is.
#
#   scripts/action/source-version.sh [SOURCE_DIR]     (default: this script's tree)
set -euo pipefail
dir=${1:-$(dirname "$0")/../..}
[ -f "$dir/Cargo.toml" ] || { echo "no Cargo.toml in $dir" >&2; exit 1; }
v=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' "$dir/Cargo.toml")
[ -n "$v" ] || { echo "no [workspace.package] version in $dir/Cargo.toml" >&2; exit 1; }
echo "v$v"
