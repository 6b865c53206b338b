#!/usr/bin/env bash
# Build cell deps-noble-amd64-gpu inside its build container: written by sf-spackenv, run by sf-build.
#
# Steps: check the compiler, trust the published mirrors' keys, concretize, install, push every
# package (roots, link/run and build dependencies) unsigned to this run's own mirror (sf-build
# merges it into the runner's shared cache afterwards), then (when Slurm is built) regenerate the
# view and refresh the modules. Each step logs to its own file under
# the log directory; a failure names the step and the log. Signing happens later, outside.
set -Eeuo pipefail

readonly CELL_ID="deps-noble-amd64-gpu"
readonly ENV_DIR="${SF_ENV_DIR:-/opt/slurm-factory/env}"
readonly LOG_DIR="${SF_LOG_DIR:-/opt/slurm-factory/env/logs}"
readonly OUT_MIRROR="/opt/slurm-factory/mirror"
readonly VIEW_ROOT="/opt/slurm/view"
readonly EXPECTED_GCC="13"
readonly BUILDS_SLURM=false
# Build jobs: the runner's cores as sf-spackenv counted them (the same number is spack.yaml's
# config:build_jobs), unless the caller says otherwise.
JOBS="${SF_BUILD_JOBS:-4}"
readonly JOBS

mkdir -p "$LOG_DIR"
step_name="setup"
step_log="$LOG_DIR/setup.log"

on_error() {
    local status=$?
    echo "error: [$CELL_ID] step '$step_name' failed (exit $status); its log is $step_log (all logs: $LOG_DIR)" >&2
    exit "$status"
}
trap on_error ERR

# step NAME: start a step; its output goes to $LOG_DIR/NAME.log and to stderr.
step() {
    step_name=$1
    step_log="$LOG_DIR/$1.log"
    : >"$step_log"
    echo "==> [$CELL_ID] $1 (log: $step_log)" >&2
}

# run CMD...: run a command of the current step, keeping its output in the step's log.
run() {
    "$@" 2>&1 | tee -a "$step_log" >&2
}

spack_env() {
    spack --env-dir "$ENV_DIR" "$@"
}

step compiler
gcc_version=$(gcc -dumpfullversion -dumpversion)
echo "gcc $gcc_version (expected $EXPECTED_GCC)" | tee -a "$step_log" >&2
# What this image really is, for the tarball's BUILDINFO.json (built_on): measured, not assumed.
os_name=''
if [ -r /etc/os-release ]; then
    # shellcheck source=/dev/null
    os_name=$(. /etc/os-release && echo "${PRETTY_NAME:-${ID:-}}")
fi
glibc_version=$(getconf GNU_LIBC_VERSION 2>/dev/null || true)
glibc_version=${glibc_version#glibc }
printf '{"os": "%s", "gcc": "%s", "glibc": "%s"}\n' "$os_name" "$gcc_version" "$glibc_version" >"$LOG_DIR/built-on.json"
case "$gcc_version" in
    "$EXPECTED_GCC" | "$EXPECTED_GCC".*) ;;
    *) echo "warning: [$CELL_ID] the image's gcc is $gcc_version, the data file expects $EXPECTED_GCC" | tee -a "$step_log" >&2 ;;
esac
run spack compiler list

step trust-keys
run spack_env buildcache keys --install --trust

step concretize
run spack_env concretize --force

step install
run spack_env install --fail-fast --jobs "$JOBS"

step push
run spack_env buildcache push --unsigned --update-index --with-build-dependencies "$OUT_MIRROR"

if [[ "$BUILDS_SLURM" == true ]]; then
    step view
    run spack_env env view regenerate
    # Spack makes the view a symlink to ._view/<hash> beside it, an absolute path that only this
    # container knows: put the tree itself at the view's path, so the host sees a directory.
    if [[ -L "$VIEW_ROOT" ]]; then
        target=$(readlink -f "$VIEW_ROOT")
        rm "$VIEW_ROOT"
        mv "$target" "$VIEW_ROOT"
        rm -rf "$(dirname "$target")"
        echo "view: moved $target to $VIEW_ROOT" | tee -a "$step_log" >&2
    fi

    step modules
    run spack_env module lmod refresh --delete-tree --yes-to-all
fi

step finished
echo "[$CELL_ID] build finished; logs in $LOG_DIR" | tee -a "$step_log" >&2
