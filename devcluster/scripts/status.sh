#!/usr/bin/env bash
# Say which parts of the local control plane run, and whether the API server is ready.
set -uo pipefail
source "$(dirname "$0")/common.sh"

PIDS="$STATE_DIR/pids"
PKI="$STATE_DIR/pki"
any=0
all=1
for name in "${COMPONENTS[@]}"; do
  pidfile="$PIDS/$name.pid"
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    printf '%-24s running (pid %s)\n' "$name" "$(cat "$pidfile")"
    any=1
  else
    printf '%-24s not running\n' "$name"
    all=0
  fi
done
# The real node's components, when one was started (make cluster NODE=real).
if [ -d "$STATE_DIR/node" ]; then
  for name in "${NODE_COMPONENTS[@]}"; do
    pidfile="$PIDS/$name.pid"
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      printf '%-24s running (pid %s, real node)\n' "$name" "$(cat "$pidfile")"
    else
      printf '%-24s not running (real node)\n' "$name"
      all=0
    fi
  done
fi
if [ "$any" = 1 ] && [ -s "$PKI/admin.crt" ] &&
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1; then
  echo "api server: ready on https://127.0.0.1:$APISERVER_PORT (KUBECONFIG=$STATE_DIR/kubeconfig)"
  kubectl_bin="$(kubernetes_bin_dir)/kubectl"
  [ -x "$kubectl_bin" ] && "$kubectl_bin" --kubeconfig "$STATE_DIR/kubeconfig" get nodes -L nvidia.com/gpu.product
else
  echo "api server: not reachable"
fi
[ "$all" = 1 ]
