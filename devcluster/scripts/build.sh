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

# Which to build: all (the default), cluster (the control plane only: what up.sh needs), or one
# component (etcd, kwok, kubernetes, helm).
only=${1:-all}
wanted() {
  case $only in
    all) return 0 ;;
    cluster) [ "$1" != helm ] ;;
    *) [ "$only" = "$1" ] ;;
  esac
}
case $only in
  all | cluster | etcd | kwok | kubernetes | helm) ;;
  *) die "build.sh: unknown component '$only' (all, cluster, etcd, kwok, kubernetes or helm)" ;;
esac

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
