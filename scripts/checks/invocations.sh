#!/usr/bin/env bash
# Every sf-* call in the workflows matches a real subcommand, flag and variable of the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --workspace --bins -q
python3 scripts/checks/invocations.py
