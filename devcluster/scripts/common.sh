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

# A key that changes whenever the component's version or module files change.
module_key() {
  local dir=$1
  cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-12
}

bin_dir_for() {
  local component=$1 version=$2
  echo "$DEVCLUSTER_CACHE/$component-$version-$(module_key "$DEVCLUSTER_DIR/$component")"
}

kubernetes_bin_dir() { bin_dir_for kubernetes "$KUBERNETES_VERSION"; }
etcd_bin_dir() { bin_dir_for etcd "$ETCD_VERSION"; }
kwok_bin_dir() { bin_dir_for kwok "$KWOK_VERSION"; }
helm_bin_dir() { bin_dir_for helm "$HELM_VERSION"; }
kubelet_bin_dir() { bin_dir_for kubelet "$KUBERNETES_VERSION"; }
containerd_bin_dir() { bin_dir_for containerd "$CONTAINERD_VERSION"; }
cni_plugins_bin_dir() { bin_dir_for cni-plugins "$CNI_PLUGINS_VERSION"; }
kube_router_bin_dir() { bin_dir_for kube-router "$KUBE_ROUTER_VERSION"; }
