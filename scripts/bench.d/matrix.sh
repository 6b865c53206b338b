# shellcheck shell=bash
# sf-matrix: cold start to exit, printing the default matrix. Target: a few milliseconds.
# Peer: /bin/true, the floor of starting any process here.
bench_matrix_runs=200
ours_ns() {
    local t0 t1
    t0=$(now_ns)
    for _ in $(seq "$bench_matrix_runs"); do "$@" >/dev/null; done
    t1=$(now_ns)
    echo $(((t1 - t0) / bench_matrix_runs))
}
m_ours=$(ours_ns "$BENCH_BIN/sf-matrix" --pipeline version --slurm-versions all --toolchains all --archs amd64)
m_true=$(ours_ns /bin/true)
m_rss=$(peak_kb "$BENCH_BIN/sf-matrix" --pipeline version)
row matrix-start-18-cells \
    "ours=$(awk -v n="$m_ours" 'BEGIN { printf "%.2fms", n / 1e6 }')" \
    "true=$(awk -v n="$m_true" 'BEGIN { printf "%.2fms", n / 1e6 }')" \
    "ratio=$(ratio "$m_ours" "$m_true")" "peak_rss=${m_rss}KiB"
