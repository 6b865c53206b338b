#!/usr/bin/env bash
# Every crate, with its tests, benches and examples, passes the workspace's clippy lints with
# warnings as errors (the lints in the root Cargo.toml are otherwise only advice).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "clippy: clean"
