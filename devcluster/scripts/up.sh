#!/usr/bin/env bash
# Start the local control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok with simulated nodes, all on 127.0.0.1.
# Reuses a cluster that already runs; builds the binaries first if the cache lacks them.
set -euo pipefail
source "$(dirname "$0")/common.sh"

started_at=$SECONDS
K8S_BIN=$(kubernetes_bin_dir)
ETCD_BIN=$(etcd_bin_dir)
KWOK_BIN=$(kwok_bin_dir)
KUBECTL="$K8S_BIN/kubectl"
PKI="$STATE_DIR/pki"
LOGS="$STATE_DIR/logs"
PIDS="$STATE_DIR/pids"
KUBECONFIG_OUT="$STATE_DIR/kubeconfig"

port_of() {
  case $1 in
    etcd) echo "$ETCD_CLIENT_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT" ;;
    kube-controller-manager) echo "$CONTROLLER_MANAGER_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
  esac
}

port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

readyz() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

# Start one component in the background with its own log and pid file.
start() {
  local name=$1 binary=$2
  shift 2
  local port
  port=$(port_of "$name")
  if running "$name"; then
    echo "devcluster: $name already runs (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  if port_taken "$port"; then
    die "port 127.0.0.1:$port, needed by $name, is taken by another process: $(ss -ltnpH "sport = :$port" 2>/dev/null | head -n1)
Stop that process, or choose another port with DEVCLUSTER_*_PORT (see devcluster/scripts/common.sh)."
  fi
  # setsid: own process group, so Ctrl-C in the caller's terminal does not reach it and
  # cluster-down can stop it and anything it spawned.
  setsid "$binary" "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
  echo "devcluster: started $name (pid $!, log $LOGS/$name.log)"
}

# Fail before a long build if a port we need is taken by something else.
for name in "${COMPONENTS[@]}"; do
  running "$name" || ! port_taken "$(port_of "$name")" ||
    die "port 127.0.0.1:$(port_of "$name"), needed by $name, is taken by another process: $(ss -ltnpH "sport = :$(port_of "$name")" 2>/dev/null | head -n1)
Stop that process, or choose other ports with DEVCLUSTER_*_PORT (see devcluster/scripts/common.sh)."
done

"$DEVCLUSTER_DIR/scripts/build.sh" cluster
mkdir -p "$LOGS" "$PIDS" "$STATE_DIR/etcd"
chmod 700 "$STATE_DIR/etcd"
"$DEVCLUSTER_DIR/scripts/certs.sh"
write_kubeconfig "$STATE_DIR/admin.kubeconfig" admin
write_kubeconfig "$STATE_DIR/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$STATE_DIR/scheduler.kubeconfig" scheduler

start etcd "$ETCD_BIN/etcd" \
  --name devcluster --data-dir "$STATE_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "devcluster=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" \
  --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 30 curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,ExtendedResourceToleration \
  --allow-privileged=true \
  --endpoint-reconciler-type none \
  --profiling=false --event-ttl 1h
wait_for kube-apiserver 90 readyz

write_kubeconfig "$KUBECONFIG_OUT" admin

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
  --cert-dir "$STATE_DIR/controller-manager-certs" \
  --cluster-name hub-on-demand-dev \
  --root-ca-file "$PKI/ca.crt" \
  --service-account-private-key-file "$PKI/sa.key" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --use-service-account-credentials=true \
  --leader-elect=false --profiling=false \
  --enable-hostpath-provisioner \
  --concurrent-namespace-syncs 10 \
  --resource-quota-sync-period 15s
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --cert-dir "$STATE_DIR/scheduler-certs" \
  --leader-elect=false --profiling=false
start kwok "$KWOK_BIN/kwok" \
  --config "$KWOK_BIN/stages.yaml" \
  --kubeconfig "$STATE_DIR/admin.kubeconfig" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 \
  --cidr 10.244.0.0/16 --node-ip 10.240.0.1 \
  --server-address "127.0.0.1:$KWOK_PORT"

kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

controller_manager_healthy() {
  curl -fsSk --max-time 2 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" >/dev/null 2>&1
}
scheduler_healthy() {
  curl -fsSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" >/dev/null 2>&1
}
wait_for kube-controller-manager 60 controller_manager_healthy
wait_for kube-scheduler 60 scheduler_healthy

kubectl apply --server-side --field-manager devcluster -f "$DEVCLUSTER_DIR/nodes.yaml" \
  -f "$DEVCLUSTER_DIR/storage.yaml" >/dev/null
nodes_ready() {
  local total ready
  total=$(kubectl get nodes -o name | wc -l)
  ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  [ "$total" -gt 0 ] && [ "$ready" -eq "$total" ]
}
wait_for kwok 60 nodes_ready
default_service_account() { kubectl -n default get serviceaccount default >/dev/null 2>&1; }
wait_for kube-controller-manager 60 default_service_account

# The optional real node (make cluster NODE=real): pods that must really run land there.
if [ "${DEVCLUSTER_NODE:-}" = real ]; then
  "$DEVCLUSTER_DIR/scripts/node.sh" up
fi

cat <<USAGE
devcluster: Kubernetes $KUBERNETES_VERSION is ready on https://127.0.0.1:$APISERVER_PORT ($((SECONDS - started_at))s)
  export KUBECONFIG=$KUBECONFIG_OUT
  $KUBECTL get nodes
  make cluster-status    # what runs
  make cluster-down      # stop it and remove its state
USAGE
