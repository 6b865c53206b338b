#!/usr/bin/env bash
# The workflows and the action pass GitHub's schemas, actionlint (with shellcheck on run: scripts)
# and zizmor's security audits at medium severity and above.
set -euo pipefail
cd "$(dirname "$0")/../.."
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
check-jsonschema --builtin-schema vendor.github-actions action.yml
actionlint -shellcheck "$(command -v shellcheck)" .github/workflows/*.yml
zizmor --offline --min-severity medium --no-progress .
echo "workflows: schemas, actionlint and zizmor clean"
