#!/usr/bin/env bash
# The tarball test, run by `sf-build test` on the host or in a clean container of the cell's base
# image. It extracts the tarball into a prefix unlike the build's (deeper, another name), loads the
# modulefile with Lmod, checks `sinfo --version` against the cell's Slurm version and that no ELF
# file under view/ has an unresolved library (`ldd` "not found", with LD_LIBRARY_PATH unset, so
# the RPATHs alone must do). Then, unless --quick, it proves a one-node cluster: the tarball's
# slurm_install.sh --full-init into that prefix, slurmctld and slurmd started, the node idle in
# sinfo, `srun -N1 hostname` and `sbatch --wait` of a two-line script succeed, `scontrol show
# config` names the plugin directory inside the prefix, and the daemons are stopped again.
#
#   test-tarball.sh (--tarball FILE | --prefix DIR) --module slurm/V-TC --version V
#                   [--quick] [--auth slurm|munge|none] [--state-dir DIR] [--slurm-user NAME]
#                   [--ports CTLD,SLURMD] [--install-lmod]
#
# --install-lmod (a throw-away container only: never on a host) installs Lmod when the image
# lacks it.
#
# On a host (sf-build test --local) the cluster runs as the invoking user on free ports, with its
# configuration, state and logs in the test's scratch folder: nothing of the host is changed.
#
# Every step is logged; the first that fails is named in the FAIL: line, with the daemons' logs.
set -o pipefail

tarball='' prefix='' module='' version='' quick=false auth=slurm state='' install_opts=()
install_lmod=false
while (($#)); do
    case "$1" in
    --tarball) tarball=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --module) module=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --quick) quick=true; shift ;;
    --auth) auth=$2; shift 2 ;;
    --state-dir) state=$2; shift 2 ;;
    --slurm-user | --ports) install_opts+=("$1" "$2"); shift 2 ;;
    --install-lmod) install_lmod=true; shift ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$module" ] || [ -z "$version" ]; then
    echo "error: --module and --version are required" >&2
    exit 2
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Problems found after the tarball is in place are gathered, so one run reports them all.
problems=()
problem() {
    echo "problem: $*" >&2
    problems+=("$*")
}

if [ -n "$tarball" ]; then
    # Deeper than the build's /opt/slurm/view and named otherwise: nothing may find its way back.
    prefix=$(mktemp -d /tmp/sf-tarball-test.XXXXXX)/relocated/elsewhere/slurm-under-test
    mkdir -p "$prefix"
    tar -xzf "$tarball" -C "$prefix" || fail "tar could not extract $tarball"
fi
[ -d "$prefix/view" ] || fail "$prefix/view is missing: the tarball has no view/"
echo "==> extracted into $prefix" >&2

lmod_init=''
for f in /usr/share/lmod/lmod/init/bash /usr/share/lmod/lmod/init/profile /etc/profile.d/lmod.sh /etc/profile.d/z00_lmod.sh; do
    if [ -f "$f" ]; then lmod_init=$f; break; fi
done
if [ -z "$lmod_init" ] && $install_lmod && [ "$(id -u)" -eq 0 ]; then
    echo "==> Lmod is not in this image; installing it" >&2
    if command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lmod; } >&2
    elif command -v dnf >/dev/null; then
        { dnf install -y -q epel-release || true; dnf install -y -q Lmod; } >&2
    fi
    for f in /usr/share/lmod/lmod/init/bash /usr/share/lmod/lmod/init/profile; do
        if [ -f "$f" ]; then lmod_init=$f; break; fi
    done
fi
[ -n "$lmod_init" ] || fail "Lmod is not installed here: install it (apt-get install lmod, or dnf install Lmod from EPEL), or test in a container"
# shellcheck source=/dev/null
source "$lmod_init" || fail "sourcing $lmod_init failed"
# A leftover init file without a working Lmod behind it would only fail later, less clearly.
module --version >/dev/null 2>&1 || fail "$lmod_init is there but gives no working 'module' command: reinstall Lmod"

export MODULEPATH="$prefix/modules"
export SLURM_INSTALL_PREFIX="$prefix/view"
unset LD_LIBRARY_PATH
module load "$module" || fail "module load $module failed"
module is-loaded "$module" || fail "module $module did not load"
echo "==> module $module loaded" >&2

# Slurm's clients want a configuration even for --version: a minimal one of the test's own.
work=$(mktemp -d /tmp/sf-tarball-work.XXXXXX)
mkdir -p "$work/min"
# (auth/none and cred/none: the plugins every Slurm build has.)
printf '%s\n' 'ClusterName=sf-version-check' 'SlurmctldHost=localhost' "PluginDir=$prefix/view/lib/slurm" \
    'AuthType=auth/none' 'CredType=cred/none' 'NodeName=localhost CPUs=1 State=UNKNOWN' 'PartitionName=p Nodes=ALL' \
    >"$work/min/slurm.conf"
export SLURM_CONF="$work/min/slurm.conf"

got=''
sinfo_path=$(command -v sinfo) || fail "sinfo is not on PATH after module load"
[ "$sinfo_path" = "$prefix/view/bin/sinfo" ] || fail "sinfo resolves to $sinfo_path, not the tarball's"
if out=$(sinfo --version 2>&1); then
    echo "==> sinfo --version: $out" >&2
    got=${out#slurm }
    got=${got%%[[:space:]]*}
    case "$got" in
    "$version" | "$version".* | "$version"-*) ;;
    *) problem "sinfo reports '$out', expected Slurm $version" ;;
    esac
else
    problem "sinfo --version failed: $out"
fi

# Without the module, the RPATHs alone must find every library.
module unload "$module"
unset LD_LIBRARY_PATH
checked=0
missing=0
while IFS= read -r -d '' f; do
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" != '177ELF' ]; then continue; fi
    checked=$((checked + 1))
    ldd_out=$(ldd "$f" 2>&1) || continue
    unresolved=$(grep 'not found' <<<"$ldd_out" | awk '{ print $1 }')
    # A shared library without an RPATH of its own (the compiler's runtime libraries) finds its
    # neighbours through the RPATH of the program that loads it (Spack links with DT_RPATH,
    # which reaches the whole chain): a library it needs right beside it is found.
    if [[ "$f" == *.so* ]] && [ -n "$unresolved" ]; then
        beside=''
        for lib in $unresolved; do [ -e "$(dirname "$f")/$lib" ] || beside+=" $lib"; done
        unresolved=$beside
    fi
    if [ -n "${unresolved// /}" ]; then
        missing=$((missing + 1))
        echo "missing libraries in ${f#"$prefix"/}:" >&2
        grep 'not found' <<<"$ldd_out" >&2
    fi
done < <(find "$prefix/view" -type f -print0)
echo "==> ldd: $checked ELF files checked, $missing with missing libraries" >&2
((missing == 0)) || problem "$missing ELF files under view/ have libraries that are not found"
if ((${#problems[@]})); then
    fail "$(IFS=';'; echo "${problems[*]}")"
fi
if $quick; then
    echo "PASS: slurm $got from $module (version and libraries only: --quick)"
    exit 0
fi

# ---- a one-node cluster from the relocated tarball ----
state=${state:-$work/state}
conf="$work/etc-slurm"
step_name=''
step() {
    step_name=$1
    echo "==> cluster: $1" >&2
}
daemon_logs() {
    local f
    for f in "$state"/log/slurmctld.log "$state"/log/slurmd.log; do
        [ -f "$f" ] || continue
        echo "--- last lines of $f:" >&2
        tail -n 25 "$f" >&2
    done
}
daemon_names() { # which of this prefix's daemons run, e.g. "slurmctld slurmd" ("none")
    local p names=''
    for p in $(daemon_pids); do names+="$(basename "$(readlink "/proc/$p/exe" 2>/dev/null)") "; done
    echo "${names:-none}"
}

daemon_pids() { # the pids of this prefix's Slurm daemons (from /proc: minimal images lack pgrep)
    local d exe
    for d in /proc/[0-9]*; do
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        case "$exe" in "$prefix"/view/sbin/slurm*) echo "${d#/proc/}" ;; esac
    done
}
stop_daemons() {
    local pids
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 1 30); do
        [ -z "$(daemon_pids)" ] && return 0
        sleep 0.5
    done
    pids=$(daemon_pids)
    # shellcheck disable=SC2086 # one word per pid
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    sleep 0.5
    [ -z "$(daemon_pids)" ]
}
cluster_fail() {
    echo "cluster step '$step_name' failed: $*" >&2
    daemon_logs
    stop_daemons
    fail "cluster step '$step_name': $*"
}

step "slurm_install.sh --full-init"
# slurmctld drops to SlurmUser: it must reach the prefix, the configuration and its state, which
# lie in folders mktemp made for root alone.
chmod 755 "$work" "${prefix%/relocated/elsewhere/slurm-under-test}" 2>/dev/null
module load "$module" || cluster_fail "module load $module failed"
bash "$prefix/data/slurm_assets/slurm_install.sh" --prefix "$prefix" --full-init \
    --cluster-name sf-test --auth "$auth" --no-cgroup --accounting none \
    --conf-dir "$conf" --state-dir "$state" --systemd-dir "$work/systemd" "${install_opts[@]}" >&2 ||
    cluster_fail "slurm_install.sh exited $?"
export SLURM_CONF="$conf/slurm.conf"
grep -q "^PluginDir=$prefix/view/lib/slurm\$" "$SLURM_CONF" || cluster_fail "slurm.conf names another PluginDir"
grep -q "ExecStart=$prefix/view/sbin/slurmd" "$work/systemd/slurmd.service" ||
    cluster_fail "the slurmd unit does not start $prefix/view/sbin/slurmd"

step "start slurmctld"
slurmctld -i >&2 || cluster_fail "slurmctld exited $?"
step "start slurmd"
# slurmd runs jobs through slurmstepd, found at its compiled-in path unless told (-d): the
# relocated one, beside it.
slurmd -d "$prefix/view/sbin/slurmstepd" >&2 || cluster_fail "slurmd exited $?"

step "the node is idle in sinfo"
node_state=''
for _ in $(seq 1 60); do
    node_state=$(timeout 10 sinfo -h -N -o %T 2>/dev/null | head -n 1)
    [ "$node_state" = idle ] && break
    # Counted twice, two seconds apart, before a daemon is declared gone: a daemon between fork
    # and exec has no readable /proc/PID/exe for a moment.
    if [ "$(daemon_pids | wc -l)" -lt 2 ]; then
        sleep 2
        [ "$(daemon_pids | wc -l)" -ge 2 ] || cluster_fail "a daemon is gone (running: $(daemon_names))"
    fi
    sleep 1
done
[ "$node_state" = idle ] || cluster_fail "the node is '${node_state:-not listed}' after 60 s, not idle"
sinfo >&2

step "srun -N1 hostname"
out=$(timeout 120 srun -N1 hostname 2>&1) || cluster_fail "srun failed: $out"
[ "$out" = "$(hostname)" ] || cluster_fail "srun printed '$out', not this host's name"
echo "srun: $out" >&2

step "sbatch --wait"
# shellcheck disable=SC2016 # expanded by the job, not here
printf '%s\n' '#!/bin/bash' 'echo "batch job $SLURM_JOB_ID on $(hostname)"' >"$work/job.sh"
out=$(cd "$work" && timeout 180 sbatch --wait -o "$work/job.out" "$work/job.sh" 2>&1) ||
    cluster_fail "sbatch --wait failed: $out"
grep -q "^batch job [0-9]* on $(hostname)\$" "$work/job.out" ||
    cluster_fail "the batch job wrote '$(cat "$work/job.out" 2>/dev/null)'"
echo "sbatch: $out; the job wrote: $(cat "$work/job.out")" >&2

step "scontrol show config"
plugin_dir=$(scontrol show config | sed -n 's/^PluginDir *= *//p')
[ "$plugin_dir" = "$prefix/view/lib/slurm" ] ||
    cluster_fail "PluginDir is '$plugin_dir', not inside the extracted prefix"

step "stop the daemons"
stop_daemons || cluster_fail "Slurm daemons are still running"
echo "PASS: slurm $got from $module; a one-node cluster ran srun and sbatch jobs from $prefix"
