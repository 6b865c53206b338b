#!/usr/bin/env bash
# Run one sf-* command for the composite action. The arguments string is split into words like a
# shell would, honouring quotes, but nothing in it is expanded or executed.
set -euo pipefail

command=${SF_ACTION_COMMAND:?the action needs a command}
case "$command" in
    sf-matrix | sf-spackenv | sf-build | sf-sign | sf-publish | sf-invalidate | sf-summary) ;;
    *)
        echo "::error title=slurm-factory::unknown command '$command'; valid: sf-matrix, sf-spackenv, sf-build, sf-sign, sf-publish, sf-invalidate, sf-summary" >&2
        exit 2
        ;;
esac

args=()
if [ -n "${SF_ACTION_ARGS:-}" ]; then
    # xargs splits on blanks and honours quotes and backslashes without any expansion. Its words
    # come back NUL-separated (a word may be empty), and a string it cannot split (an unmatched
    # quote) stops here: running the command with the words before the fault would drop the rest.
    words=$(mktemp)
    trap 'rm -f "$words"' EXIT
    if ! why=$(printf '%s' "$SF_ACTION_ARGS" | xargs -r -n1 printf '%s\0' 2>&1 >"$words"); then
        echo "::error title=slurm-factory::the args input does not split into words (${why#xargs: }); pair every ' and \" quote on one line, or escape the character with a backslash" >&2
        exit 2
    fi
    mapfile -d '' -t args <"$words"
    rm -f "$words"
    trap - EXIT
fi

export SF_RESULTS_DIR="${SF_RESULTS_DIR:-${RUNNER_TEMP:-/tmp}/sf-results}"
exec "$command" "${args[@]}"
