#!/usr/bin/env bash
# Run every test of the project on a fresh machine.
#
# 1. installs the tools the tests use, from the package registries (Debian's apt, PyPI, crates),
#    as listed in scripts/deps/*.apt, *.pip and *.cargo (one package per line, `#` comments);
# 2. starts the servers the tests talk to, on 127.0.0.1 only (moto: S3, STS, CloudFront);
# 3. runs the whole suite (cargo nextest, then doc tests with cargo test --doc, since nextest does
#    not run them, then the script checks);
# 4. stops the servers, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '[test.sh] %s\n' "$*" >&2; }

packages() { # packages EXT: every package named in scripts/deps/*.EXT
    cat scripts/deps/*."$1" 2>/dev/null | sed -e 's/#.*//' -e 's/[[:space:]]*$//' | grep -v '^$' | sort -u || true
}

install_apt() {
    local missing=()
    for p in $(packages apt); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "apt: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

install_pip() {
    mapfile -t pkgs < <(packages pip)
    ((${#pkgs[@]})) || return 0
    # Debian's own Python refuses pip installs (PEP 668, "externally managed"): there the tools go
    # into a virtual environment of the checkout's, whose python3 and scripts come first on PATH
    # for everything after this.
    if python3 -c 'import os, sys, sysconfig
sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        local venv="$root/target/test-tools/venv"
        if [ ! -x "$venv/bin/python3" ]; then
            log "pip: this Python is externally managed; the tools go into $venv"
            python3 -m venv "$venv"
        fi
        export PATH="$venv/bin:$PATH"
    fi
    log "pip: ${pkgs[*]}"
    python3 -m pip install -q --disable-pip-version-check "${pkgs[@]}"
}

install_cargo() {
    local line name
    while read -r line; do
        [ -n "$line" ] || continue
        name=${line%% *}
        name=${name%@*}
        if ! command -v "$name" >/dev/null 2>&1; then
            log "cargo install $line"
            # shellcheck disable=SC2086 # the line carries its own flags
            cargo install -q $line
        fi
    done < <(packages cargo)
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
stop_servers() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # vfs keeps a full copy of every layer and container: gigabytes nobody reads again.
    rm -rf "$root/target/test-servers/docker-data"
}
trap stop_servers EXIT

start_moto() {
    local port
    port=$(free_port)
    mkdir -p "$root/target/test-servers"
    moto_server -H 127.0.0.1 -p "$port" >"$root/target/test-servers/moto.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
            export SF_TEST_MOTO_URL="http://127.0.0.1:$port"
            log "moto server on $SF_TEST_MOTO_URL"
            return 0
        fi
        sleep 0.2
    done
    log "moto server did not start; its log:"
    cat "$root/target/test-servers/moto.log" >&2
    return 1
}

# A Docker engine of the tests' own (Debian's dockerd): vfs storage and no bridge or iptables, so
# it runs without the kernel features a container host would give it; its socket and storage
# stay under target/ and /tmp, and it stops with the other servers.
start_dockerd() {
    local dir="$root/target/test-servers" exec_root
    exec_root=$(mktemp -d /tmp/sf-dockerd.XXXXXX) # socket paths have a length limit
    mkdir -p "$dir/docker-data"
    dockerd --host "unix://$exec_root/docker.sock" --data-root "$dir/docker-data" \
        --exec-root "$exec_root/exec" --pidfile "$exec_root/docker.pid" \
        --storage-driver vfs --iptables=false --ip6tables=false --bridge=none \
        >"$dir/dockerd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 150); do
        if DOCKER_HOST="unix://$exec_root/docker.sock" docker info >/dev/null 2>&1; then
            export SF_TEST_DOCKER_HOST="unix://$exec_root/docker.sock"
            log "dockerd on $SF_TEST_DOCKER_HOST"
            return 0
        fi
        sleep 0.2
    done
    log "dockerd did not start; its log:"
    cat "$dir/dockerd.log" >&2
    return 1
}

# The test runner itself; cargo-nextest is a cargo subcommand, so it is looked for the way cargo
# finds it rather than by name on PATH.
install_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "cargo install cargo-nextest --locked"
        cargo install -q cargo-nextest --locked
    fi
}

# The real-Spack tests build from local copies of the pinned upstream trees (Spack, its package
# repositories) and clingo's wheels: $SF_OFFLINE_DIR, else ~/.slurm-factory/offline (see
# scripts/offline-inputs.sh). Gathered here when missing; where they cannot be, those tests fail
# and say how to provide them.
offline_inputs() {
    if ! bash scripts/offline-inputs.sh >/dev/null; then
        log "the offline inputs are incomplete: the real-Spack tests will fail (scripts/offline-inputs.sh --help)"
    fi
}

install_apt
install_pip
install_cargo
install_nextest
offline_inputs
start_moto
start_dockerd
# What the real-Spack tests share within this run (the host Spack, each cell's concretization),
# and their report.
export SF_TEST_RUN_DIR="$root/target/real-spack-run"
rm -rf "$SF_TEST_RUN_DIR"
mkdir -p "$SF_TEST_RUN_DIR"

# Incremental state is of no use to a one-off run and doubles the target folder's size.
export CARGO_INCREMENTAL=0
log "cargo nextest run --workspace"
mkdir -p "$root/target"
nextest_log="$root/target/nextest.log"
cargo nextest run --workspace --no-fail-fast --failure-output final 2>&1 | tee "$nextest_log"
rust_passed=$(sed -n 's/.* tests run: \([0-9]*\) passed.*/\1/p' "$nextest_log" | tail -n 1)
log "cargo test --doc --workspace"
cargo test -q --doc --workspace

checks=0
for check in scripts/checks/*.sh; do
    [ -e "$check" ] || continue
    log "check: $check"
    bash "$check"
    checks=$((checks + 1))
done

if [ -f "$SF_TEST_RUN_DIR/report.txt" ]; then
    log "what the real Spack did:"
    sort "$SF_TEST_RUN_DIR/report.txt" >&2
fi

# One closing line for people and CI: Rust tests and script checks together (any failure has
# already stopped the script with a non-zero exit).
log "$rust_passed Rust tests and $checks script checks passed"
echo "tests: $((rust_passed + checks)) passed, 0 failed"
