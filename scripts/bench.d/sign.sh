# shellcheck shell=bash
# sf-sign file: a detached ASCII-armoured signature of a 1 GB file, against
# `gpg --batch --pinentry-mode loopback --detach-sign --armor` and `sqop sign` with the same
# RSA-4096 key (all three hash with SHA-512, the key's preference), and one hashing pass (the
# faster of `sha512sum` and `openssl dgst -sha512`) as the floor. Target (SPEC section 11): faster
# than gpg and sqop, close to one hashing pass, memory flat.
#
# Sourced by scripts/bench.sh; also runs on its own: `bash scripts/bench.d/sign.sh`
# (BENCH_DIR: scratch space, default a new temp dir; BENCH_SIGN_MB: file size, default 1024;
# BENCH_SIGN_RUNS: runs per tool, the fastest is kept, default 2).

if ! declare -F row >/dev/null; then
    # Standalone: the few helpers bench.sh would have defined.
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    if [ -z "${BENCH_DIR:-}" ]; then
        BENCH_DIR=$(mktemp -d /tmp/sf-bench-sign.XXXXXX)
        # shellcheck disable=SC2064 # the directory is known now
        trap "rm -rf '$BENCH_DIR'" EXIT
    fi
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
    if [ ! -x "$BENCH_BIN/sf-sign" ]; then
        cargo build --release -q -p sf-sign
    fi
fi
apt_need gnupg sqop time coreutils openssl

sign_dir="$BENCH_DIR/sign"
sign_mb=${BENCH_SIGN_MB:-1024}
sign_runs=${BENCH_SIGN_RUNS:-2}
rm -rf "$sign_dir"
mkdir -p "$sign_dir/gnupg"
chmod 700 "$sign_dir/gnupg"
sign_data="$sign_dir/data.bin"

# Incompressible, reproducible data, quicker to make than reading /dev/urandom.
# (openssl ends on SIGPIPE when head has enough, which is not a failure.)
{ openssl enc -aes-128-ctr -nosalt -pass pass:slurm-factory-bench -pbkdf2 -in /dev/zero 2>/dev/null || true; } |
    head -c "$((sign_mb * 1024 * 1024))" >"$sign_data"
test "$(stat -c %s "$sign_data")" -eq "$((sign_mb * 1024 * 1024))"

# One RSA-4096 key (no passphrase, so no agent prompt is timed) for all three signers.
sign_gpg() { gpg --homedir "$sign_dir/gnupg" --batch --no-tty --pinentry-mode loopback --passphrase '' "$@"; }
sign_gpg --quick-gen-key 'Bench Signer <bench@example.invalid>' rsa4096 sign never 2>/dev/null
sign_gpg --check-trustdb 2>/dev/null
sign_fpr=$(sign_gpg --with-colons --list-keys | awk -F: '/^fpr:/ { print $10; exit }')
sign_gpg --armor --export-secret-keys "$sign_fpr" >"$sign_dir/secret.asc"
sign_gpg --armor --export "$sign_fpr" >"$sign_dir/public.asc"

# Warm the page cache so every contender reads from memory.
cat "$sign_data" >/dev/null

# sign_timed NAME CMD...: run BENCH_SIGN_RUNS times under GNU time; sets NAME_s (fastest wall
# seconds), NAME_cpu (least user+system CPU seconds: steadier than wall time when other work
# shares the cores) and NAME_kb (largest peak RSS, KiB).
sign_timed() {
    local name=$1 best="" best_cpu="" peak=0 s kb user sys cpu i
    shift
    for ((i = 0; i < sign_runs; i++)); do
        /usr/bin/time -f '%e %M %U %S' -o "$sign_dir/.time" "$@" >/dev/null 2>"$sign_dir/.err" || {
            cat "$sign_dir/.err" >&2
            return 1
        }
        read -r s kb user sys <"$sign_dir/.time"
        cpu=$(awk -v u="$user" -v y="$sys" 'BEGIN { printf "%.2f", u + y }')
        if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
        if [ -z "$best_cpu" ] || awk -v a="$cpu" -v b="$best_cpu" 'BEGIN { exit !(a < b) }'; then best_cpu=$cpu; fi
        if ((kb > peak)); then peak=$kb; fi
    done
    printf -v "${name}_s" '%s' "$best"
    printf -v "${name}_cpu" '%s' "$best_cpu"
    printf -v "${name}_kb" '%s' "$peak"
}

sign_timed ours "$BENCH_BIN/sf-sign" file "$sign_data" --key-file "$sign_dir/secret.asc"
sign_timed gpg gpg --homedir "$sign_dir/gnupg" --batch --no-tty --yes --pinentry-mode loopback --passphrase '' \
    --local-user "$sign_fpr" --detach-sign --armor --output "$sign_dir/gpg.asc" "$sign_data"
# shellcheck disable=SC2016 # expanded by the inner sh
sign_timed sqop sh -c 'sqop sign "$1" <"$2" >"$3"' sh "$sign_dir/secret.asc" "$sign_data" "$sign_dir/sqop.asc"
sign_timed sha512 sha512sum "$sign_data"
sign_timed ossl openssl dgst -sha512 "$sign_data"

# Our signature must be a real one: gpg checks it (outside the timing).
sign_gpg --verify "$sign_data.asc" "$sign_data" 2>/dev/null
# The floor: the faster of the two single hashing passes.
# shellcheck disable=SC2154 # set by sign_timed through printf -v
sign_hash_s=$(awk -v a="$sha512_s" -v b="$ossl_s" 'BEGIN { print (a < b ? a : b) }')
# shellcheck disable=SC2154 # set by sign_timed through printf -v
sign_hash_cpu=$(awk -v a="$sha512_cpu" -v b="$ossl_cpu" 'BEGIN { print (a < b ? a : b) }')

# shellcheck disable=SC2154 # set by sign_timed through printf -v
row "sign-${sign_mb}MB" \
    "ours=${ours_s}s" "gpg=${gpg_s}s" "sqop=${sqop_s}s" "sha512sum=${sha512_s}s" "openssl_sha512=${ossl_s}s" \
    "time_vs_gpg=$(ratio "$ours_s" "$gpg_s")" "time_vs_sqop=$(ratio "$ours_s" "$sqop_s")" \
    "time_vs_one_hash=$(ratio "$ours_s" "$sign_hash_s")" \
    "cpu=${ours_cpu}s" "gpg_cpu=${gpg_cpu}s" "sqop_cpu=${sqop_cpu}s" "one_hash_cpu=${sign_hash_cpu}s" \
    "cpu_vs_gpg=$(ratio "$ours_cpu" "$gpg_cpu")" "cpu_vs_sqop=$(ratio "$ours_cpu" "$sqop_cpu")" \
    "cpu_vs_one_hash=$(ratio "$ours_cpu" "$sign_hash_cpu")" \
    "peak_rss=${ours_kb}KiB" "gpg_rss=${gpg_kb}KiB" "sqop_rss=${sqop_kb}KiB" "sha512sum_rss=${sha512_kb}KiB"
gpgconf --homedir "$sign_dir/gnupg" --kill all 2>/dev/null || true
rm -rf "$sign_dir"
