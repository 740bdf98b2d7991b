#!/usr/bin/env bash
# Build the control-plane binaries into the cache, once per version.
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

only=${1:-all}
if [ "$only" = all ] || [ "$only" = etcd ]; then
  build etcd "$(etcd_bin_dir)" -ldflags "-s -w" .
fi
if [ "$only" = all ] || [ "$only" = kwok ]; then
  build kwok "$(kwok_bin_dir)" \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    sigs.k8s.io/kwok/cmd/kwok
fi
# kwok needs Stage objects that describe how simulated nodes and pods move through their
# lifecycle. Take kwok's own defaults (the ones kwokctl uses) from the pinned module,
# rather than keeping a copy of them in this repository.
kwok_stages="$(kwok_bin_dir)/stages.yaml"
if [ -d "$(kwok_bin_dir)" ] && [ ! -s "$kwok_stages" ]; then
  kwok_src=$(cd "$DEVCLUSTER_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$kwok_src/kustomize/stage/$stage.yaml"
  done > "$kwok_stages.tmp"
  mv "$kwok_stages.tmp" "$kwok_stages"
fi

if [ "$only" = all ] || [ "$only" = kubernetes ]; then
  build kubernetes "$(kubernetes_bin_dir)" -ldflags "-s -w$k8s_version_flags" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
fi
