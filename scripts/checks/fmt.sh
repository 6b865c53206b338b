#!/usr/bin/env bash
# The code is formatted with the repository's rustfmt settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo fmt --all --check
echo "rustfmt: clean"
