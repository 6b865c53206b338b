#!/usr/bin/env bash
# The action's command step (scripts/action/run.sh): the args input is split into words like a
# shell would (quotes group, backslashes escape, an empty quoted word stays, nothing is
# expanded), a string that cannot be split is exit 2 and runs nothing, an unknown command is
# exit 2, and a real binary runs with the words.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build -q -p sf-matrix

work=$(mktemp -d /tmp/sf-action-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "action-run: FAIL: $*" >&2
    exit 1
}

# A command of the action's that only writes down the words it was given, one per line between
# brackets, so the split can be read back exactly.
mkdir -p "$work/bin"
cat >"$work/bin/sf-summary" <<'SH'
#!/usr/bin/env bash
for a in "$@"; do printf '[%s]\n' "$a"; done >"$SF_RUN_RECORD"
SH
chmod +x "$work/bin/sf-summary"

# run COMMAND ARGS: the action's step; sets rc and err.
run() {
    rc=0
    : >"$work/record"
    env -i PATH="$work/bin:$target_dir/debug:$PATH" HOME="$HOME" RUNNER_TEMP="$work" \
        SF_RUN_RECORD="$work/record" SF_ACTION_COMMAND="$1" SF_ACTION_ARGS="$2" \
        bash scripts/action/run.sh >"$work/out" 2>"$work/err" || rc=$?
    err=$(cat "$work/err")
}

# 1. Quotes, backslashes, an empty word, and text a shell would expand but must not here.
# shellcheck disable=SC2016 # the $HOME and $(...) are the input, not to be expanded
run sf-summary $'--title "two words"  \'single quoted\' back\\ slash \'\' $HOME $(id) *'
[ "$rc" = 0 ] || fail "a good args string gave exit $rc: $err"
# shellcheck disable=SC2016
expected='[--title]
[two words]
[single quoted]
[back slash]
[]
[$HOME]
[$(id)]
[*]'
[ "$(cat "$work/record")" = "$expected" ] || fail "split as: $(cat "$work/record")"

# 2. Unmatched quotes: exit 2, the reason named, the command not run at all.
for bad in "--dry-run 'a b" "--title it's" '--title "open'; do
    run sf-summary "$bad"
    [ "$rc" = 2 ] || fail "'$bad' gave exit $rc"
    [[ "$err" == *"does not split into words"*"unmatched"* ]] || fail "no reason for '$bad': $err"
    [ ! -s "$work/record" ] || fail "'$bad' ran the command with: $(cat "$work/record")"
done

# 3. An unknown command: exit 2, naming the valid ones.
run sf-nothing ""
[ "$rc" = 2 ] || fail "an unknown command gave exit $rc"
[[ "$err" == *"unknown command 'sf-nothing'; valid: sf-matrix"* ]] || fail "no reason: $err"

# 4. A real binary gets the words: a matrix of one cell.
run sf-matrix "--pipeline tarball --slurm-versions 25.11 --toolchains 'noble'"
[ "$rc" = 0 ] || fail "sf-matrix through the action gave exit $rc: $err"
python3 - "$work/out" <<'PY' || fail "sf-matrix's answer: $(cat "$work/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert [c["toolchain"] for c in d["include"]] == ["noble"], d
PY

echo "action-run: words split like a shell's without expansion, unsplittable args refused, real binary run"
