#!/usr/bin/env bash
# Start a real one-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) entirely under DIR.
#
# Usage:   slurm/cluster/start.sh DIR
# Prints:  export SLURM_CONF=DIR/etc/slurm.conf   (on stdout; progress goes to stderr)
# Env:     SLURMCTLD_PORT SLURMD_PORT SLURMDBD_PORT MARIADB_PORT (defaults 6817 6818 6819 3306),
#          START_TIMEOUT (seconds per readiness check, default 60), CLUSTER_NAME (default nas-local).
# Needs root and the packages from install-debian.sh. Stop with slurm/cluster/stop.sh DIR, which kills
# only the daemons whose pid files live under DIR/run.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$(realpath -m "$1")"
TEMPLATES="$HERE/templates"
TIMEOUT="${START_TIMEOUT:-60}"
SLURMCTLD_PORT="${SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"
SLURMDBD_PORT="${SLURMDBD_PORT:-6819}"
MARIADB_PORT="${MARIADB_PORT:-3306}"
CLUSTER_NAME="${CLUSTER_NAME:-nas-local}"
export SLURM_CONF="$DIR/etc/slurm.conf"

log() { echo "[start.sh $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then die "must run as root (slurmd and munged need it)"; fi
for cmd in munged munge unmunge mariadbd mariadb-install-db mariadb-admin mariadb slurmdbd slurmctld slurmd sinfo sacctmgr; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || die "$cmd not found: run slurm/cluster/install-debian.sh"
done
export PATH="$PATH:/usr/sbin:/sbin"

# Refuse to start twice on the same DIR (a pid file naming a live, non-zombie process of that name).
running() {
    local f="$DIR/run/$1.pid" pid
    [ -s "$f" ] && pid="$(cat "$f")" && [ -r "/proc/$pid/cmdline" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1"
}
for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if running "$name"; then
        die "$name already running under $DIR (pid $(cat "$DIR/run/$name.pid")); run stop.sh $DIR first"
    fi
done

mkdir -p "$DIR"/{etc,state,spool/slurmd,run,log,mysql}
chmod 0755 "$DIR/run"

# On any failure: show what we know and stop whatever this script started.
on_error() {
    log "start failed; last log lines:"
    for f in "$DIR"/log/*.log "$DIR"/log/*.err; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
    done
    bash "$HERE/stop.sh" "$DIR" >&2 || true
}
trap on_error ERR

# wait_for DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds or TIMEOUT passes.
wait_for() {
    local desc="$1"; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then log "timed out after ${TIMEOUT}s waiting for $desc"; return 1; fi
        sleep 0.1
    done
    log "$desc ready"
}

# ---------------------------------------------------------------- configuration from the templates
read -r CPUS REAL_MEMORY < <(slurmd -C | awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}}
    END {print v["CPUs"], v["RealMemory"]}' | head -n 1)
[ -n "$CPUS" ] && [ -n "$REAL_MEMORY" ] || die "could not read CPUs/RealMemory from 'slurmd -C'"
# Leave a margin: a RealMemory above what slurmd measures puts the node in state INVAL.
REAL_MEMORY=$((REAL_MEMORY * 95 / 100))

render() {  # render TEMPLATE OUTPUT
    local dir_escaped="${DIR//|/\\|}"
    sed -e "s|@CLUSTER_DIR@|$dir_escaped|g" -e "s|@CLUSTER_NAME@|$CLUSTER_NAME|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEMORY@|$REAL_MEMORY|g" \
        -e "s|@SLURMCTLD_PORT@|$SLURMCTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@SLURMDBD_PORT@|$SLURMDBD_PORT|g" -e "s|@MARIADB_PORT@|$MARIADB_PORT|g" "$1" >"$2"
}
render "$TEMPLATES/slurm.conf.in" "$DIR/etc/slurm.conf"
render "$TEMPLATES/slurmdbd.conf.in" "$DIR/etc/slurmdbd.conf"
chmod 0644 "$DIR/etc/slurm.conf"
chmod 0600 "$DIR/etc/slurmdbd.conf"
log "configs written to $DIR/etc (CPUs=$CPUS RealMemory=$REAL_MEMORY, ports $SLURMCTLD_PORT/$SLURMD_PORT/$SLURMDBD_PORT/$MARIADB_PORT)"

# ---------------------------------------------------------------- 1. munged, own key and socket
if [ ! -s "$DIR/etc/munge.key" ]; then
    (umask 077; dd if=/dev/urandom of="$DIR/etc/munge.key" bs=1024 count=1 status=none)
fi
munged --force --socket="$DIR/run/munge.socket" --key-file="$DIR/etc/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munged.seed" \
    </dev/null >>"$DIR/log/munged.log" 2>&1
munge_ok() { munge -S "$DIR/run/munge.socket" -n </dev/null | unmunge -S "$DIR/run/munge.socket"; }
wait_for munged munge_ok

# ---------------------------------------------------------------- 2. MariaDB (own datadir, TCP on 127.0.0.1)
MYSQL_SOCK="$DIR/mysql/mysql.sock"
if [ ! -d "$DIR/mysql/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
        --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
fi
setsid /usr/sbin/mariadbd --no-defaults --datadir="$DIR/mysql/data" --socket="$MYSQL_SOCK" \
    --bind-address=127.0.0.1 --port="$MARIADB_PORT" --user=root --pid-file="$DIR/run/mariadb.server.pid" \
    --log-error="$DIR/log/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
    --skip-name-resolve </dev/null >/dev/null 2>&1 &
echo $! >"$DIR/run/mariadbd.pid"
wait_for mariadb mariadb-admin --no-defaults --socket="$MYSQL_SOCK" ping
mariadb --no-defaults --socket="$MYSQL_SOCK" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# ---------------------------------------------------------------- 3. slurmdbd (reads slurmdbd.conf beside SLURM_CONF)
slurmdbd </dev/null >>"$DIR/log/slurmdbd.log" 2>&1
wait_for slurmdbd sacctmgr -n list cluster

# ---------------------------------------------------------------- 4. controller, then node daemon
slurmctld </dev/null >>"$DIR/log/slurmctld.log" 2>&1
wait_for slurmctld scontrol ping
slurmd -N localhost </dev/null >>"$DIR/log/slurmd.log" 2>&1
node_idle() { sinfo -h -n localhost -o %T | grep -Eq '^(idle|mixed|allocated)'; }
wait_for "node localhost idle" node_idle

trap - ERR
echo "export SLURM_CONF=$SLURM_CONF"
