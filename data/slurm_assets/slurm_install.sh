#!/usr/bin/env bash
# Install Slurm from an extracted Slurm Factory tarball.
#
# The tarball holds view/ (Slurm and its libraries), modules/ (the Lmod modulefile) and
# data/slurm_assets/ (this script, systemd units, configuration templates, the accounting
# database SQL). This script copies view/ and modules/ into a prefix (nothing to copy when the
# tarball was extracted there) and, with --full-init, writes this host's configuration from the
# templates and installs the systemd units pointing at the prefix.
#
# It checks everything first and only then acts, so it never stops half-way for a reason it could
# have seen; --dry-run prints the plan and changes nothing.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: slurm_install.sh [options]

Install Slurm from an extracted Slurm Factory tarball into a prefix.

Options:
  --prefix DIR          install prefix (default /opt/slurm; view/ and modules/ go under it)
  --full-init           also write configs and systemd units and create the slurm user/dirs
  --cluster-name NAME   cluster name for slurm.conf (default: slurm-cluster)
  --conf-dir DIR        where configs go (default /etc/slurm)
  --systemd-dir DIR     where units go (default /etc/systemd/system)
  --auth munge|slurm|none
                        authentication: munge (default; needs munged running), Slurm's own
                        auth/slurm with a key generated into the conf dir (no munge needed; a
                        Slurm built with libjwt), or none (no authentication at all: a
                        throw-away test cluster only)
  --no-cgroup           track and confine jobs without cgroups (proctrack/linuxproc, no task
                        or accounting-gather plugin): containers and hosts without cgroup v2
  --accounting slurmdbd|none
                        job accounting through slurmdbd (default) or none
  --state-dir DIR       spool, log and pid files under DIR (default: /var/spool, /var/log/slurm
                        and /run)
  --slurm-user NAME     the user slurmctld runs as (default slurm, created when missing; an
                        existing user is used as it is)
  --ports CTLD,SLURMD   slurmctld's and slurmd's ports (default 6817,6818)
  --force               replace existing configs, keys and units
  --dry-run             print what would be done, change nothing
  -h, --help            this help

After installing:
  export MODULEPATH=PREFIX/modules:$MODULEPATH SLURM_INSTALL_PREFIX=PREFIX/view
  module load slurm/VERSION-TOOLCHAIN
USAGE
}

die() {
    echo "error: $*" >&2
    exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The tarball's root: data/slurm_assets/ is two levels below it.
source_root=$(cd "$here/../.." && pwd)

prefix=/opt/slurm
full_init=false
cluster_name=slurm-cluster
conf_dir=/etc/slurm
systemd_dir=/etc/systemd/system
force=false
dry_run=false
auth=munge
cgroup=true
accounting=slurmdbd
state_dir=''
slurm_user=slurm
ports=6817,6818

while (($#)); do
    case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --full-init) full_init=true; shift ;;
    --cluster-name) cluster_name=${2:?--cluster-name needs a name}; shift 2 ;;
    --cluster-name=*) cluster_name=${1#*=}; shift ;;
    --conf-dir) conf_dir=${2:?--conf-dir needs a directory}; shift 2 ;;
    --conf-dir=*) conf_dir=${1#*=}; shift ;;
    --systemd-dir) systemd_dir=${2:?--systemd-dir needs a directory}; shift 2 ;;
    --systemd-dir=*) systemd_dir=${1#*=}; shift ;;
    --auth) auth=${2:?--auth needs munge or slurm}; shift 2 ;;
    --auth=*) auth=${1#*=}; shift ;;
    --no-cgroup) cgroup=false; shift ;;
    --accounting) accounting=${2:?--accounting needs slurmdbd or none}; shift 2 ;;
    --accounting=*) accounting=${1#*=}; shift ;;
    --state-dir) state_dir=${2:?--state-dir needs a directory}; shift 2 ;;
    --state-dir=*) state_dir=${1#*=}; shift ;;
    --slurm-user) slurm_user=${2:?--slurm-user needs a user name}; shift 2 ;;
    --slurm-user=*) slurm_user=${1#*=}; shift ;;
    --ports) ports=${2:?--ports needs CTLD,SLURMD}; shift 2 ;;
    --ports=*) ports=${1#*=}; shift ;;
    --force) force=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
    esac
done

# ---- checks: everything that could stop us, before anything changes ----
[[ "$prefix" == /* ]] || die "--prefix must be an absolute path, got '$prefix'"
prefix=${prefix%/}
[[ "$cluster_name" =~ ^[a-z0-9][a-z0-9_-]{0,39}$ ]] ||
    die "--cluster-name '$cluster_name' is not valid: lowercase letters, digits, '-' and '_', at most 40 characters"
case "$auth" in munge | slurm | none) ;; *) die "--auth '$auth' is not valid: munge, slurm or none" ;; esac
if [ "$auth" != munge ] && [ ! -e "$source_root/view/lib/slurm/auth_$auth.so" ]; then
    die "--auth $auth: this Slurm has no auth_$auth plugin (view/lib/slurm/auth_$auth.so)"
fi
case "$accounting" in slurmdbd | none) ;; *) die "--accounting '$accounting' is not valid: slurmdbd or none" ;; esac
[[ "$slurm_user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--slurm-user '$slurm_user' is not a user name"
[[ "$ports" =~ ^([0-9]{1,5}),([0-9]{1,5})$ ]] || die "--ports '$ports' is not two port numbers: CTLD,SLURMD"
ctld_port=${BASH_REMATCH[1]} slurmd_port=${BASH_REMATCH[2]}
for port in "$ctld_port" "$slurmd_port"; do
    ((port >= 1 && port <= 65535)) || die "--ports '$ports': $port is not a port number (1-65535)"
done
if [ -n "$state_dir" ]; then
    [[ "$state_dir" == /* ]] || die "--state-dir must be an absolute path, got '$state_dir'"
    state_dir=${state_dir%/}
    slurmd_spool=$state_dir/spool/slurmd ctld_state=$state_dir/spool/slurmctld
    log_dir=$state_dir/log run_dir=$state_dir/run
else
    slurmd_spool=/var/spool/slurmd ctld_state=/var/spool/slurmctld log_dir=/var/log/slurm run_dir=/run
fi
[ -x "$source_root/view/bin/sinfo" ] || die "$source_root/view/bin/sinfo is missing: run this script from an extracted tarball"
[ -d "$source_root/modules" ] || die "$source_root/modules is missing: run this script from an extracted tarball"
for f in defaults/slurmd.service defaults/slurmctld.service defaults/slurmdbd.service \
    slurm/slurm.conf.template slurm/slurmdbd.conf.template slurm/cgroup.conf.template \
    slurm/topology.conf.template mysql/slurm_acct_db.sql; do
    [ -f "$here/$f" ] || die "$here/$f is missing from the tarball"
done

# Something in the way (an existing file, no --force): a real run stops here; a dry run goes on
# and shows the whole plan with each conflict marked, then exits 2.
conflicts=()
conflict() { # conflict PATH
    if $dry_run; then
        conflicts+=("$1")
    else
        die "$1 already exists; pass --force to replace it"
    fi
}
in_conflict() { # in_conflict PATH: whether PATH is one of the conflicts
    local c
    for c in "${conflicts[@]}"; do [ "$c" = "$1" ] && return 0; done
    return 1
}

copy_tree=true
if [ -d "$prefix" ] && [ "$(cd "$source_root" && pwd -P)" = "$(cd "$prefix" && pwd -P)" ]; then
    copy_tree=false
fi
if $copy_tree && [ -e "$prefix/view" ] && ! $force; then
    conflict "$prefix/view"
fi

if $full_init; then
    if ! $dry_run && [ "$(id -u)" -ne 0 ]; then
        die "--full-init creates the slurm user and writes $conf_dir and $systemd_dir: run it as root (or add --dry-run)"
    fi
    conf_files=(slurm.conf slurmdbd.conf cgroup.conf topology.conf)
    [ "$auth" = slurm ] && conf_files+=(slurm.key)
    for f in "${conf_files[@]}"; do
        if [ -e "$conf_dir/$f" ] && ! $force; then
            conflict "$conf_dir/$f"
        fi
    done
    for u in slurmd slurmctld slurmdbd; do
        if [ -e "$systemd_dir/$u.service" ] && ! $force; then
            conflict "$systemd_dir/$u.service"
        fi
    done
    host=$(hostname -s 2>/dev/null || hostname)
    cpus=$(nproc)
    mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    # Leave 5% to the OS, as slurmd refuses a node that reports less than RealMemory.
    real_memory=$((mem_kib * 95 / 100 / 1024))
    sockets=$(lscpu 2>/dev/null | awk -F: '/^Socket\(s\)/ { gsub(/ /, "", $2); print $2 }')
    threads=$(lscpu 2>/dev/null | awk -F: '/^Thread\(s\) per core/ { gsub(/ /, "", $2); print $2 }')
    sockets=${sockets:-1}
    threads=${threads:-1}
    cores_per_socket=$((cpus / sockets / threads))
    ((cores_per_socket > 0)) || cores_per_socket=1
    # What slurmd itself sees, when it can tell (slurmd -C needs no configuration): its CPU
    # layout is the one it will register with.
    if node=$("$source_root/view/sbin/slurmd" -C 2>/dev/null | grep '^NodeName='); then
        field() { sed -n "s/.* $1=\([0-9][0-9]*\).*/\1/p" <<<"$node"; }
        # (slurmd -C says SocketsPerBoard, with Boards=1 on ordinary hosts.)
        cpus=$(field CPUs) cores_per_socket=$(field CoresPerSocket) threads=$(field ThreadsPerCore)
        sockets=$(field Sockets)
        [ -n "$sockets" ] || sockets=$(field SocketsPerBoard)
        slurmd_memory=$(field RealMemory)
        if [ -n "$slurmd_memory" ]; then real_memory=$((slurmd_memory * 95 / 100)); fi
        node_source="slurmd -C"
    else
        node_source="nproc, lscpu and /proc/meminfo"
    fi
    auth_type=auth/$auth cred_type=cred/$auth
    if $cgroup; then
        proctrack=proctrack/cgroup task_plugin=task/cgroup,task/affinity
        jobacct=jobacct_gather/cgroup cgroup_plugin=autodetect
    else
        proctrack=proctrack/linuxproc task_plugin=task/none
        jobacct=jobacct_gather/none cgroup_plugin=disabled
    fi
    if [ "$accounting" = slurmdbd ]; then
        accounting_type=accounting_storage/slurmdbd
    else
        accounting_type=accounting_storage/none
    fi
    if $dry_run; then
        db_password='<generated at install>'
    else
        db_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)
    fi
fi

# ---- acting (or, with --dry-run, saying what would be done) ----
mark() { # mark PATH: the dry run's note on a path in conflict
    if in_conflict "$1"; then echo " [CONFLICT: $1 exists; --force replaces it]"; fi
}

act() { # act DESCRIPTION CMD...: run CMD, or print DESCRIPTION on a dry run
    local what=$1
    shift
    if $dry_run; then
        echo "would: $what"
    else
        echo "==> $what"
        "$@"
    fi
}

replace_tree() { # replace_tree SRC DEST: copy beside DEST, then swap, so DEST is never half-copied
    rm -rf "$2.new"
    cp -a "$1" "$2.new"
    rm -rf "$2"
    mv "$2.new" "$2"
}

fill() { # fill TEMPLATE: the template with this host's values
    sed -e "s|@CLUSTER_NAME@|$cluster_name|g" -e "s|@HOSTNAME@|$host|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@REAL_MEMORY@|$real_memory|g" -e "s|@SOCKETS@|$sockets|g" \
        -e "s|@CORES_PER_SOCKET@|$cores_per_socket|g" -e "s|@THREADS_PER_CORE@|$threads|g" \
        -e "s|@PREFIX@|$prefix|g" -e "s|@CONF_DIR@|$conf_dir|g" -e "s|@DB_PASSWORD@|$db_password|g" \
        -e "s|@AUTH_TYPE@|$auth_type|g" -e "s|@CRED_TYPE@|$cred_type|g" \
        -e "s|@PROCTRACK_TYPE@|$proctrack|g" -e "s|@TASK_PLUGIN@|$task_plugin|g" \
        -e "s|@JOBACCT_GATHER_TYPE@|$jobacct|g" -e "s|@CGROUP_PLUGIN@|$cgroup_plugin|g" \
        -e "s|@ACCOUNTING_STORAGE_TYPE@|$accounting_type|g" \
        -e "s|@SLURMD_SPOOL_DIR@|$slurmd_spool|g" -e "s|@STATE_SAVE_LOCATION@|$ctld_state|g" \
        -e "s|@LOG_DIR@|$log_dir|g" -e "s|@RUN_DIR@|$run_dir|g" -e "s|@SLURM_USER@|$slurm_user|g" \
        -e "s|@SLURMCTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
        "$1"
}

render() { # render TEMPLATE DEST MODE
    local tmp
    if $dry_run; then
        echo "would: write $2 (mode $3) from $(basename "$1")$(mark "$2")"
        fill "$1" | grep -v '^#' | sed 's/^/    | /'
        return
    fi
    echo "==> write $2"
    tmp=$(mktemp "$2.XXXXXX")
    fill "$1" >"$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

write_key() { # write_key DEST: a new auth/slurm key, readable by the slurm user only
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    chmod 600 "$tmp"
    head -c 1024 /dev/urandom >"$tmp"
    chown "$slurm_user:" "$tmp"
    mv -f "$tmp" "$1"
}

if $copy_tree; then
    act "create $prefix" mkdir -p "$prefix"
    for d in view modules; do
        act "copy $source_root/$d to $prefix/$d$(mark "$prefix/$d")" replace_tree "$source_root/$d" "$prefix/$d"
    done
else
    echo "note: the tarball is already at $prefix; nothing to copy"
fi

if $full_init; then
    if ! id "$slurm_user" >/dev/null 2>&1; then
        act "create the system user $slurm_user" useradd --system --no-create-home --shell /usr/sbin/nologin "$slurm_user"
    fi
    act "create $conf_dir, $slurmd_spool, $ctld_state, $log_dir, $run_dir" \
        mkdir -p "$conf_dir" "$slurmd_spool" "$ctld_state" "$log_dir" "$run_dir"
    act "give $ctld_state and $log_dir to $slurm_user" chown "$slurm_user:" "$ctld_state" "$log_dir"
    echo "cluster $cluster_name on $host: $cpus CPUs ($sockets sockets x $cores_per_socket cores x $threads threads), RealMemory=$real_memory MiB (from $node_source); $auth_type, $proctrack, $accounting_type"
    if [ "$auth" = slurm ]; then
        act "generate the auth/slurm key $conf_dir/slurm.key (mode 600, owner slurm)$(mark "$conf_dir/slurm.key")" write_key "$conf_dir/slurm.key"
    fi
    render "$here/slurm/slurm.conf.template" "$conf_dir/slurm.conf" 644
    render "$here/slurm/cgroup.conf.template" "$conf_dir/cgroup.conf" 644
    render "$here/slurm/topology.conf.template" "$conf_dir/topology.conf" 644
    render "$here/slurm/slurmdbd.conf.template" "$conf_dir/slurmdbd.conf" 600
    act "give $conf_dir/slurmdbd.conf to $slurm_user" chown "$slurm_user:" "$conf_dir/slurmdbd.conf"
    act "create $systemd_dir" mkdir -p "$systemd_dir"
    for u in slurmd slurmctld slurmdbd; do
        render "$here/defaults/$u.service" "$systemd_dir/$u.service" 644
        # A unit for a daemon this build has not (slurmdbd without a database client, say)
        # would fail at its first start: said now.
        if [ ! -x "$source_root/view/sbin/$u" ]; then
            echo "warning: $u.service starts $prefix/view/sbin/$u, which this tarball does not have" >&2
        fi
    done
    if [ -d /run/systemd/system ]; then
        act "reload systemd" systemctl daemon-reload
    fi
    daemons="slurmctld slurmd"
    if [ "$accounting" = slurmdbd ]; then
        echo "next: create the accounting database with"
        echo "  sed 's/@DB_PASSWORD@/<StoragePass from $conf_dir/slurmdbd.conf>/' $here/mysql/slurm_acct_db.sql | mysql -u root"
        daemons="slurmdbd $daemons"
    fi
    [ "$auth" = munge ] && daemons="munge $daemons"
    echo "then: systemctl enable --now $daemons"
fi
if $dry_run; then
    if ((${#conflicts[@]})); then
        echo "error: the plan has ${#conflicts[@]} conflict(s), marked above: ${conflicts[*]}; a real run would stop at the first (--force replaces them)" >&2
        exit 2
    fi
    echo "dry run: nothing was changed"
    exit 0
fi
echo "done: export MODULEPATH=$prefix/modules:\$MODULEPATH SLURM_INSTALL_PREFIX=$prefix/view; module avail slurm"
