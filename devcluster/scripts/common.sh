# Shared settings of the devcluster scripts; sourced, not run.
# shellcheck shell=bash
DEVCLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$DEVCLUSTER_DIR/.." && pwd)
# shellcheck source=../versions.env
source "$DEVCLUSTER_DIR/versions.env"

# Built binaries live outside the repository, one folder per component and version.
DEVCLUSTER_CACHE=${DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hub-on-demand/devcluster}
# Runtime state (certificates, etcd data, logs, pid files) of the running cluster.
STATE_DIR=${DEVCLUSTER_STATE:-$REPO_ROOT/.devcluster}

ETCD_CLIENT_PORT=${DEVCLUSTER_ETCD_PORT:-2379}
ETCD_PEER_PORT=${DEVCLUSTER_ETCD_PEER_PORT:-2380}
APISERVER_PORT=${DEVCLUSTER_APISERVER_PORT:-6443}
CONTROLLER_MANAGER_PORT=${DEVCLUSTER_CONTROLLER_MANAGER_PORT:-10257}
SCHEDULER_PORT=${DEVCLUSTER_SCHEDULER_PORT:-10259}
KWOK_PORT=${DEVCLUSTER_KWOK_PORT:-10247}

# Order matters: started in this order, stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

die() {
  echo "devcluster: $*" >&2
  exit 1
}

log_tail() {
  local file=$1
  if [ -s "$file" ]; then
    echo "---- last lines of $file ----" >&2
    tail -n 25 "$file" >&2
    echo "----" >&2
  fi
}

# Pid files and logs of the running components (control plane and real node).
component_pidfile() { echo "$STATE_DIR/pids/$1.pid"; }
component_log() { echo "$STATE_DIR/logs/$1.log"; }

running() {
  local pidfile
  pidfile=$(component_pidfile "$1")
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Wait until a check passes; fail with the log's tail if the process dies or time runs out.
wait_for() {
  local name=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout)) log
  log=$(component_log "$name")
  until "$@"; do
    if ! running "$name"; then
      log_tail "$log"
      die "$name exited during start-up; see $log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      log_tail "$log"
      die "$name was not ready after ${timeout}s; see $log"
    fi
    sleep 0.5
  done
}

# Stop a component started in its own process group (setsid): the whole group, TERM first.
stop_component() {
  local name=$1 pidfile pid
  pidfile=$(component_pidfile "$name")
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
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
}

# A kubeconfig for one of the cluster's client certificates ($STATE_DIR/pki/USER.crt), for the
# API server at SERVER (default: its loopback address), checked against TLS_NAME if given.
write_kubeconfig() {
  local file=$1 user=$2 server=${3:-https://127.0.0.1:$APISERVER_PORT} tls_name=${4:-}
  local pki="$STATE_DIR/pki"
  cat > "$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: hub-on-demand-dev
  cluster:
    server: $server
${tls_name:+    tls-server-name: $tls_name
}    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: hub-on-demand-dev
  context: {cluster: hub-on-demand-dev, user: $user}
current-context: hub-on-demand-dev
KUBECONFIG
  chmod 600 "$file"
}

# A key that changes whenever the component's version or module files change (or the other
# build inputs named after the folder: a main package of our own).
module_key() {
  local dir=$1
  shift
  cat "$dir/go.mod" "$dir/go.sum" "$@" | sha256sum | cut -c1-12
}

bin_dir_for() {
  local component=$1 version=$2
  shift 2
  echo "$DEVCLUSTER_CACHE/$component-$version-$(module_key "$DEVCLUSTER_DIR/$component" "$@")"
}

kubernetes_bin_dir() { bin_dir_for kubernetes "$KUBERNETES_VERSION"; }
etcd_bin_dir() { bin_dir_for etcd "$ETCD_VERSION"; }
kwok_bin_dir() { bin_dir_for kwok "$KWOK_VERSION"; }
helm_bin_dir() { bin_dir_for helm "$HELM_VERSION"; }
kubelet_bin_dir() { bin_dir_for kubelet "$KUBERNETES_VERSION"; }
containerd_bin_dir() { bin_dir_for containerd "$CONTAINERD_VERSION"; }
cni_plugins_bin_dir() { bin_dir_for cni-plugins "$CNI_PLUGINS_VERSION"; }
kube_router_bin_dir() { bin_dir_for kube-router "$KUBE_ROUTER_VERSION"; }

# The optional real node (make cluster NODE=real; scripts/node.sh). Everything it runs lives in
# its own network namespace, so its iptables rules, ipsets, bridge and listening ports never
# meet another cluster's on the same machine; what crosses into the host (a veth pair, routes
# to the pod and Service ranges, a cgroup) is named after the API server's port. Two clusters
# with real nodes on one machine need distinct DEVCLUSTER_SERVICE_CIDR values.
node_index=$((APISERVER_PORT % 250 + 1))
NODE_NAME=${DEVCLUSTER_NODE_NAME:-real-node}
NODE_NETNS=${DEVCLUSTER_NODE_NETNS:-hod-node-$APISERVER_PORT}
NODE_HOST_VETH=${DEVCLUSTER_NODE_VETH:-hod$APISERVER_PORT}
NODE_BRIDGE=${DEVCLUSTER_NODE_BRIDGE:-hod0}
NODE_CGROUP=${DEVCLUSTER_NODE_CGROUP:-hod-node-$APISERVER_PORT}
# A /30 between the host (.1) and the node (.2); the node's pods; the Services.
NODE_LINK_NET=${DEVCLUSTER_NODE_LINK_NET:-10.201.$node_index.0}
NODE_HOST_IP=${NODE_LINK_NET%.*}.$((${NODE_LINK_NET##*.} + 1))
NODE_IP=${NODE_LINK_NET%.*}.$((${NODE_LINK_NET##*.} + 2))
NODE_POD_CIDR=${DEVCLUSTER_NODE_POD_CIDR:-10.202.$node_index.0/24}
SERVICE_CIDR=${DEVCLUSTER_SERVICE_CIDR:-10.96.0.0/16}
# The first address of the Service range is the `kubernetes` Service (certs.sh puts it in the
# API server's certificate).
service_base=${SERVICE_CIDR%/*}
KUBERNETES_SERVICE_IP=${service_base%.*}.$((${service_base##*.} + 1))
CLUSTER_DNS_IP=${service_base%.*}.$((${service_base##*.} + 10))
# The local cluster's ingress (devcluster/ingress/ingress.py, a pod on the real node): TLS for
# every hub's https://<slug>.<hubs domain> with a certificate of its own CA, at a fixed Service
# address the host reaches (the Service range is routed to the node).
INGRESS_NAMESPACE=devcluster-ingress
INGRESS_CLASS=devcluster
INGRESS_IP=${service_base%.*}.$((${service_base##*.} + 11))
INGRESS_HUBS_DOMAIN=${DEVCLUSTER_HUBS_DOMAIN:-hubs.localhost}
INGRESS_TLS_DIR="$STATE_DIR/ingress"
# Ports the node listens on, inside its namespace (on NODE_IP or the namespace's loopback).
KUBELET_PORT=${DEVCLUSTER_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${DEVCLUSTER_KUBELET_HEALTHZ_PORT:-10248}
KUBE_PROXY_HEALTHZ_PORT=${DEVCLUSTER_KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${DEVCLUSTER_KUBE_PROXY_METRICS_PORT:-10249}
KUBE_ROUTER_HEALTH_PORT=${DEVCLUSTER_KUBE_ROUTER_HEALTH_PORT:-20244}
# The taint and label that keep ordinary pods on the simulated nodes and let a pod that must
# really run ask for this one.
NODE_TAINT_KEY=hub-on-demand.dev/real-node
NODE_LABEL=hub-on-demand.dev/node=real
NODE_COMPONENTS=(node-apiserver-link containerd kubelet kube-proxy kube-router volume-permissions)
# Images of the real node, built here (images.sh) and imported into its containerd: no pod pulls.
IMAGE_REGISTRY=hub-on-demand.local
PAUSE_IMAGE=$IMAGE_REGISTRY/pause:1
COREDNS_IMAGE=$IMAGE_REGISTRY/coredns:${COREDNS_VERSION#v}
BASE_IMAGE=$IMAGE_REGISTRY/debian:bookworm
HUB_IMAGE_REF=$IMAGE_REGISTRY/k8s-hub:5.4.6
PROXY_IMAGE_REF=$IMAGE_REGISTRY/configurable-http-proxy:5.0.1
SINGLEUSER_IMAGE=$IMAGE_REGISTRY/singleuser:lab-4.6.6
images_dir() {
  local key
  key=$({
    cat "$DEVCLUSTER_DIR"/images/*/* "$REPO_ROOT/package-lock.json" \
      "$DEVCLUSTER_DIR/scripts/images.sh" "$DEVCLUSTER_DIR/scripts/oci_archive.py"
    coredns_bin_dir
  } | sha256sum | cut -c1-12)
  echo "$DEVCLUSTER_CACHE/images-$key"
}
coredns_bin_dir() { bin_dir_for coredns "$COREDNS_VERSION" "$DEVCLUSTER_DIR/coredns/main.go"; }
