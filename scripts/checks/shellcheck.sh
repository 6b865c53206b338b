#!/usr/bin/env bash
# Every shell script in the repository passes shellcheck.
set -euo pipefail
cd "$(dirname "$0")/../.."
mapfile -t scripts < <(git ls-files '*.sh' '.ci/run' | grep -v '^tests/fixtures/')
shellcheck -x "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
