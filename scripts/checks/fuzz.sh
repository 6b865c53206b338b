#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted input (fuzz/: the ELF reader and RPATH
# rewrite, the tarball member checks, spec/key manifests and the key index, the package index),
# each for a bounded time, from the corpus kept in fuzz/corpus (what a run finds new stays in
# target/, the corpus in the repository is only read). A crash fails the check and leaves its
# input under target/fuzz-artifacts/TARGET/ to become a regression test.
#
#   SF_FUZZ_SECONDS   seconds per target (default 40)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
seconds=${SF_FUZZ_SECONDS:-40}

# cargo-fuzz needs nightly (libFuzzer's instrumentation flags); the toolchain is the Rust
# project's own, like the stable one the README installs.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain (minimal profile)" >&2
    rustup toolchain install nightly --profile minimal >/dev/null
fi
export CARGO_TARGET_DIR="$root/target/fuzz"
# No sanitizer: the code is safe Rust, the point is panics, hangs and runaway memory; building
# without AddressSanitizer takes a fraction of the time.
cargo +nightly fuzz build --fuzz-dir fuzz -s none -O >"$root/target/fuzz-build.log" 2>&1 ||
    { tail -n 40 "$root/target/fuzz-build.log" >&2; exit 1; }

report=()
for target in elf tar_check manifest index; do
    work="$root/target/fuzz-corpus/$target"
    artifacts="$root/target/fuzz-artifacts/$target"
    mkdir -p "$work" "$artifacts"
    log="$root/target/fuzz-$target.log"
    rc=0
    # New inputs go to $work; the repository's corpus (second) is read only.
    cargo +nightly fuzz run --fuzz-dir fuzz -s none -O "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target found a failing input (exit $rc): $(ls "$artifacts")" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    report+=("$target: ${runs:-?} runs in ${seconds} s, $cov, nothing found")
done
printf 'fuzz: %s\n' "${report[@]}"
