#!/usr/bin/env bash
# Build the control-plane binaries, and helm for the chart, into the cache, once per version.
# A folder that exists is complete (builds land in a temporary folder and are renamed),
# so a second run builds nothing.
set -euo pipefail
source "$(dirname "$0")/common.sh"

command -v go >/dev/null || die "Go is required to build the control plane (https://go.dev); 'go' is not on PATH"
mkdir -p "$DEVCLUSTER_CACHE"
export CGO_ENABLED=0

build() {
  local component=$1 out=$2
  shift 2
  if [ -d "$out" ]; then
    echo "devcluster: $component: cached in $out"
    return 0
  fi
  local tmp="$out.partial.$$" logfile="$DEVCLUSTER_CACHE/build-$component.log"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  echo "devcluster: building $component (log: $logfile) ..."
  local started=$SECONDS
  if ! (cd "$DEVCLUSTER_DIR/$component" && go build -trimpath -o "$tmp/" "$@") >"$logfile" 2>&1; then
    rm -rf "$tmp"
    log_tail "$logfile"
    die "building $component failed; see $logfile"
  fi
  mv "$tmp" "$out"
  echo "devcluster: built $component in $((SECONDS - started))s"
}

minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
k8s_version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_version_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# Which to build: all (the default: the control plane and helm), cluster (the control plane
# only: what up.sh needs), node (the optional real node: kubelet, kube-proxy, containerd, the CNI
# plugins, kube-router and CoreDNS), or one component (etcd, kwok, kubernetes, helm, kubelet,
# containerd, cni-plugins, kube-router, coredns).
only=${1:-all}
node_components=" kubelet containerd cni-plugins kube-router coredns "
wanted() {
  case $only in
    all) [ "$1" = helm ] || [[ $node_components != *" $1 "* ]] ;;
    cluster) [ "$1" != helm ] && [[ $node_components != *" $1 "* ]] ;;
    node) [[ $node_components == *" $1 "* ]] ;;
    *) [ "$only" = "$1" ] ;;
  esac
}
case $only in
  all | cluster | node | etcd | kwok | kubernetes | helm | kubelet | containerd | cni-plugins | kube-router | coredns) ;;
  *) die "build.sh: unknown component '$only' (all, cluster, node, etcd, kwok, kubernetes, helm, kubelet, containerd, cni-plugins, kube-router or coredns)" ;;
esac

# A module's go.mod must pin the version that versions.env names (a bump edits both).
check_pinned() {
  local component=$1 module=$2 version=$3 pinned
  pinned=$(cd "$DEVCLUSTER_DIR/$component" && go list -m -f '{{.Version}}' "$module")
  [ "$pinned" = "$version" ] ||
    die "devcluster/$component/go.mod pins $module $pinned but versions.env says $version"
}

if wanted etcd; then
  build etcd "$(etcd_bin_dir)" -ldflags "-s -w" .
fi
if wanted kwok; then
  build kwok "$(kwok_bin_dir)" \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    sigs.k8s.io/kwok/cmd/kwok
fi
# kwok needs Stage objects that describe how simulated nodes and pods move through their
# lifecycle. Take kwok's own defaults (the ones kwokctl uses) from the pinned module,
# rather than keeping a copy of them in this repository.
kwok_stages="$(kwok_bin_dir)/stages.yaml"
if wanted kwok && [ -d "$(kwok_bin_dir)" ] && [ ! -s "$kwok_stages" ]; then
  kwok_src=$(cd "$DEVCLUSTER_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$kwok_src/kustomize/stage/$stage.yaml"
  done > "$kwok_stages.tmp"
  mv "$kwok_stages.tmp" "$kwok_stages"
fi

if wanted kubernetes; then
  build kubernetes "$(kubernetes_bin_dir)" -ldflags "-s -w$k8s_version_flags" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
fi

# helm for the portal's chart (chart/). Its version ldflags are the ones helm's own Makefile
# sets: the release, and the Kubernetes version of its client-go modules, which `helm template`
# and `helm lint` assume when they talk to no cluster.
if wanted helm && [ ! -d "$(helm_bin_dir)" ]; then
  client_go=$(cd "$DEVCLUSTER_DIR/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  client_minor=${client_go#v0.}
  client_minor=${client_minor%%.*}
  helm_flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  helm_flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_minor"
  done
  build helm "$(helm_bin_dir)" -ldflags "$helm_flags" helm.sh/helm/v3/cmd/helm
elif wanted helm; then
  echo "devcluster: helm: cached in $(helm_bin_dir)"
fi

# The optional real node (make cluster NODE=real). Static binaries (CGO off) like the rest.
if wanted kubelet; then
  check_pinned kubelet k8s.io/kubernetes "$KUBERNETES_VERSION"
  build kubelet "$(kubelet_bin_dir)" -ldflags "-s -w$k8s_version_flags" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
fi
if wanted containerd; then
  check_pinned containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION"
  build containerd "$(containerd_bin_dir)" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
fi
if wanted cni-plugins; then
  check_pinned cni-plugins github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION"
  build cni-plugins "$(cni_plugins_bin_dir)" \
    -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/main/bridge \
    github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/main/loopback \
    github.com/containernetworking/plugins/plugins/meta/portmap
fi
if wanted kube-router; then
  check_pinned kube-router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION"
  build kube-router "$(kube_router_bin_dir)" \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
fi
if wanted coredns; then
  check_pinned coredns github.com/coredns/coredns "$COREDNS_VERSION"
  # devcluster/coredns/main.go: CoreDNS with only the plugins the local cluster uses.
  build coredns "$(coredns_bin_dir)" \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" .
fi
