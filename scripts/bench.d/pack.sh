# shellcheck shell=bash
# sf-build pack: a ~1 GB view (real binaries and libraries copied from /usr) packed into the
# relocatable .tar.gz by `sf-build pack`, against `tar czf` (gzip -6, one core) and
# `tar -I pigz -cf` (all cores) on the same tree. Targets (SPEC section 11): faster than pigz,
# size within 5% of gzip -6, peak memory under 100 MB and flat.
#
# Sourced by scripts/bench.sh; also runs on its own: `bash scripts/bench.d/pack.sh`
# (BENCH_DIR: scratch space, default a new temp dir; BENCH_PACK_MB: view size, default 1024).

if ! declare -F row >/dev/null; then
    # Standalone: the few helpers bench.sh would have defined.
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/sf-bench-pack.XXXXXX)}
    BENCH_BIN=${BENCH_BIN:-$(pwd)/target/release}
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f", a / b }'; }
    row() { printf '%-26s %s\n' "$1" "${*:2}"; }
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
    if [ ! -x "$BENCH_BIN/sf-build" ] || [ ! -x "$BENCH_BIN/sf-matrix" ]; then
        cargo build --release -q -p sf-build -p sf-matrix
    fi
fi
apt_need pigz time

pack_dir="$BENCH_DIR/pack"
pack_view="$pack_dir/view"
pack_mb=${BENCH_PACK_MB:-1024}
rm -rf "$pack_dir"
mkdir -p "$pack_view"

# The view: whole directories of real ELF files from /usr until the size is reached.
for src in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/bin /usr/lib/gcc /usr/libexec /usr/share/doc /usr/share/locale; do
    [ -d "$src" ] || continue
    have=$(du -sm "$pack_view" | cut -f1)
    ((have < pack_mb)) || break
    mkdir -p "$pack_view/${src#/usr/}"
    cp -a "$src/." "$pack_view/${src#/usr/}/" 2>/dev/null || true
done
# A view holds no link out of itself (sf-build refuses those): drop absolute and climbing links.
find "$pack_view" -type l \( -lname '/*' -o -lname '*..*' \) -delete
find "$pack_view" ! -type f ! -type d ! -type l -delete
pack_view_mb=$(du -sm "$pack_view" | cut -f1)
pack_files=$(find "$pack_view" -type f | wc -l)

"$BENCH_BIN/sf-matrix" --pipeline tarball --slurm-versions 25.11 --toolchains noble >"$pack_dir/cell.json"
printf 'setenv("SLURM_ROOT", "/opt/slurm/view")\n' >"$pack_dir/module.lua"

# Warm the page cache so every contender reads from memory.
find "$pack_view" -type f -exec cat {} + >/dev/null

# timed NAME CMD...: run once under GNU time; sets NAME_s (wall seconds) and NAME_kb (peak RSS).
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$pack_dir/.time" "$@" >/dev/null 2>"$pack_dir/.err" || {
        cat "$pack_dir/.err" >&2
        return 1
    }
    read -r "${name}_s" "${name}_kb" <"$pack_dir/.time"
}

timed ours "$BENCH_BIN/sf-build" pack --cell "$pack_dir/cell.json" --view "$pack_view" \
    --modulefile "$pack_dir/module.lua" --out "$pack_dir/ours.tar.gz" --force --source-date-epoch 1700000000
timed pigz tar -C "$pack_dir" -I pigz -cf "$pack_dir/pigz.tar.gz" view
timed gzip tar -C "$pack_dir" -czf "$pack_dir/gzip.tar.gz" view

ours_bytes=$(stat -c %s "$pack_dir/ours.tar.gz")
pigz_bytes=$(stat -c %s "$pack_dir/pigz.tar.gz")
gzip_bytes=$(stat -c %s "$pack_dir/gzip.tar.gz")
gzip -t "$pack_dir/ours.tar.gz"

# shellcheck disable=SC2154 # set by timed through read
row "pack-${pack_view_mb}MB-${pack_files}files" \
    "ours=${ours_s}s" "pigz=${pigz_s}s" "gzip6=${gzip_s}s" \
    "time_vs_pigz=$(ratio "$ours_s" "$pigz_s")" "time_vs_gzip6=$(ratio "$ours_s" "$gzip_s")" \
    "size_vs_gzip6=$(ratio "$ours_bytes" "$gzip_bytes")" "size_vs_pigz=$(ratio "$ours_bytes" "$pigz_bytes")" \
    "peak_rss=${ours_kb}KiB" "pigz_rss=${pigz_kb}KiB" "cores=$(nproc)"
rm -rf "$pack_dir"
