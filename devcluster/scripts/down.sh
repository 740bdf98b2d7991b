#!/usr/bin/env bash
# Stop every process the local control plane started and remove its state.
#   down.sh               stop and remove state (certificates, etcd data, kubeconfig)
#   down.sh --keep-state  stop only; the next start resumes the same cluster and objects
set -euo pipefail
source "$(dirname "$0")/common.sh"

PIDS="$STATE_DIR/pids"
# The real node first (if one was started): its processes, mounts, cgroups and network.
if [ -d "$STATE_DIR/node" ] || [ -e "/run/netns/$NODE_NETNS" ]; then
  "$DEVCLUSTER_DIR/scripts/node.sh" down
fi
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  stop_component "${COMPONENTS[i]}"
done
if [ "${1:-}" = "--keep-state" ]; then
  echo "devcluster: stopped; state kept in $STATE_DIR"
  exit 0
fi
# The kubeconfig, certificates and etcd data go too: the next start is a new cluster.
rm -rf "$STATE_DIR"
echo "devcluster: down; state removed"
