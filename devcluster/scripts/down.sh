#!/usr/bin/env bash
# Stop every process the local control plane started and remove its state.
#   down.sh               stop and remove state (certificates, etcd data, kubeconfig)
#   down.sh --keep-state  stop only; the next start resumes the same cluster and objects
set -euo pipefail
source "$(dirname "$0")/common.sh"

PIDS="$STATE_DIR/pids"
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  name=${COMPONENTS[i]}
  pidfile="$PIDS/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    # Each component runs in its own process group (setsid); stop the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "devcluster: stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
if [ "${1:-}" = "--keep-state" ]; then
  echo "devcluster: stopped; state kept in $STATE_DIR"
  exit 0
fi
# The kubeconfig, certificates and etcd data go too: the next start is a new cluster.
rm -rf "$STATE_DIR"
echo "devcluster: down; state removed"
