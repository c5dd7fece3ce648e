#!/usr/bin/env bash
# Stop the one-node SLURM cluster that start.sh started under DIR: cancel its jobs, then SIGTERM each daemon
# named by a pid file under DIR/run (SIGKILL after a grace period). Nothing else is touched.
#
# Usage: slurm/cluster/stop.sh DIR      Env: STOP_TIMEOUT (seconds per daemon group, default 15)
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$(realpath -m "$1")"
TIMEOUT="${STOP_TIMEOUT:-15}"
export SLURM_CONF="$DIR/etc/slurm.conf"
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[stop.sh $(date +%T)] $*" >&2; }

# pid_of NAME: the pid from DIR/run/NAME.pid if that process is alive and is NAME (guards against pid reuse).
pid_of() {
    local f="$DIR/run/$1.pid" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1" || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
    echo "$pid"
}

# stop_group NAME...: SIGTERM all, wait up to TIMEOUT, then SIGKILL the survivors.
stop_group() {
    local pids=() name pid
    for name in "$@"; do
        if pid="$(pid_of "$name")"; then pids+=("$pid"); kill -TERM "$pid" 2>/dev/null; log "SIGTERM $name ($pid)"; fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    local deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        local alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]; then alive=1; fi
        done
        [ "$alive" -eq 1 ] || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then log "SIGKILL $pid (did not stop in ${TIMEOUT}s)"; kill -KILL "$pid" 2>/dev/null; fi
    done
}

# Cancel the jobs still known to this cluster's controller so no job step outlives the node daemon.
if pid_of slurmctld >/dev/null && [ -f "$SLURM_CONF" ]; then
    jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel --full $jobs 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [ "$SECONDS" -lt "$deadline" ] && [ -n "$(timeout 5 squeue -h -t R,CG -o %A 2>/dev/null)" ]; do sleep 0.2; done
    fi
fi

stop_group slurmd slurmctld
stop_group slurmdbd mariadbd
stop_group munged
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid_of "$name" >/dev/null || rm -f "$DIR/run/$name.pid"
done
rm -f "$DIR/run/munge.socket" "$DIR/run/munge.socket.lock"
log "stopped cluster under $DIR"
