#!/usr/bin/env bash
# Speed and memory of our binaries against named peer tools, measured in one run on this machine
# and printed as ratios (the targets are in SPEC section 11; timed tests would only be flaky).
#
#   scripts/bench.sh            every row
#   scripts/bench.sh matrix     only rows whose fragment name contains "matrix"
#
# Each row lives in scripts/bench.d/NAME.sh, sourced with BENCH_DIR (scratch space), BENCH_BIN
# (our release binaries) and the helpers below defined. Fragments install their peers themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
filter=${1:-}

# Our binaries are where cargo puts them (CARGO_TARGET_DIR moves them out of target/).
target_dir=${CARGO_TARGET_DIR:-target}
[[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
export BENCH_BIN="$target_dir/release"
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/sf-bench.XXXXXX)}
export BENCH_DIR
trap 'rm -rf "$BENCH_DIR"' EXIT

log() { printf '[bench] %s\n' "$*" >&2; }

# apt_need PKG...: install Debian packages that are missing.
apt_need() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# now_ns: a monotonic-enough clock in nanoseconds.
now_ns() { date +%s%N; }

# wall_s CMD...: run once, print seconds with millisecond precision.
wall_s() {
    local t0 t1
    t0=$(now_ns)
    "$@" >/dev/null
    t1=$(now_ns)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

# peak_kb CMD...: run once under GNU time, print the peak resident set in KiB.
peak_kb() {
    /usr/bin/time -f '%M' -o "$BENCH_DIR/.rss" "$@" >/dev/null 2>&1
    cat "$BENCH_DIR/.rss"
}

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f", a / b }'; }

# row NAME FIELDS...: one result line.
row() { printf '%-26s %s\n' "$1" "${*:2}"; }

apt_need time
log "building release binaries"
cargo build --release --workspace --bins -q

printf '%-26s %s\n' "row" "figures (ratio = ours / peer; < 1 means we are faster or smaller)"
for fragment in scripts/bench.d/*.sh; do
    name=$(basename "$fragment" .sh)
    [ -z "$filter" ] || [[ "$name" == *"$filter"* ]] || continue
    log "running $name"
    # shellcheck source=/dev/null
    source "$fragment"
done
