#!/usr/bin/env bash
# Build the real node's images into the cache, once per content of devcluster/images/ (and of
# the files named in images_dir): OCI archives that node.sh imports into the node's containerd.
# No Docker, no registry, no pulls:
#   pause       the static Go program in devcluster/images/pause
#   coredns     the CoreDNS binary that build.sh made
#   base        Debian bookworm (debootstrap --variant=minbase) with images/base/packages.txt
#   hub         base + a venv with images/hub/requirements.txt (JupyterHub, KubeSpawner, ...)
#   singleuser  base + a venv with images/singleuser/requirements.txt (JupyterLab), user jovyan
#   proxy       base + configurable-http-proxy from the repository's package-lock.json
# An upper layer is built in an overlay mount over the base, so it holds only what it adds.
set -euo pipefail
source "$(dirname "$0")/common.sh"

[ "$(id -u)" = 0 ] || die "building the real node's images needs root (debootstrap, chroot, mounts)"
out=$(images_dir)
mkdir -p "$out"
images="$DEVCLUSTER_DIR/images"
pack() { python3 "$DEVCLUSTER_DIR/scripts/oci_archive.py" "$@"; }
started=$SECONDS

if [ ! -s "$out/pause.tar" ]; then
  work=$(mktemp -d "$out/pause.XXXXXX")
  (cd "$images/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/rootfs/pause" .)
  pack "$PAUSE_IMAGE" "$out/pause.tar" "$work/rootfs" --entrypoint '["/pause"]' --user 65535:65535
  rm -rf "$work"
fi

# The Debian mirror apt uses here, unless DEVCLUSTER_DEBIAN_MIRROR names another.
debian_mirror() {
  if [ -n "${DEVCLUSTER_DEBIAN_MIRROR:-}" ]; then
    echo "$DEVCLUSTER_DEBIAN_MIRROR"
    return
  fi
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  echo "${uri:-http://deb.debian.org/debian}"
}

# The base is keyed by its package list alone, so that a change to an upper layer reuses it.
base="$DEVCLUSTER_CACHE/image-base-$(sha256sum "$images/base/packages.txt" | cut -c1-12)"
if [ ! -d "$base" ]; then
  command -v debootstrap >/dev/null || die "building the base image needs debootstrap (bash scripts/system-packages.sh node)"
  rm -rf "$base.partial"
  packages=$(grep -v '^#' "$images/base/packages.txt" | paste -sd, -)
  echo "devcluster: images: debootstrap of the base image (log: $out/base.log) ..."
  debootstrap --variant=minbase --include="$packages" bookworm "$base.partial" "$(debian_mirror)" \
    >"$out/base.log" 2>&1 || { log_tail "$out/base.log"; die "debootstrap failed; see $out/base.log"; }
  rm -rf "$base.partial"/var/cache/apt/archives/*.deb "$base.partial"/var/lib/apt/lists/* \
    "$base.partial"/usr/share/doc/* "$base.partial"/usr/share/man/* "$base.partial"/usr/share/locale/*
  mv "$base.partial" "$base"
fi

# Build the upper layer $1 over the base: run the rest of the arguments in a chroot of the
# overlay (network as the host's, for pip), keep only what they added.
merged=""
cleanup_overlay() {
  if [ -n "$merged" ] && mountpoint -q "$merged"; then umount "$merged"; fi
}
trap cleanup_overlay EXIT
layer() {
  local name=$1
  shift
  local upper="$out/$name-layer"
  [ -d "$upper" ] && return 0
  local work="$out/$name.work"
  rm -rf "$upper.partial" "$work"
  mkdir -p "$upper.partial" "$work/ovl" "$work/merged"
  merged="$work/merged"
  mount -t overlay overlay -o "lowerdir=$base,upperdir=$upper.partial,workdir=$work/ovl" "$merged"
  cp /etc/resolv.conf "$merged/etc/resolv.conf"
  echo "devcluster: images: building the $name layer (log: $out/$name.log) ..."
  if ! "$@" >"$out/$name.log" 2>&1; then
    log_tail "$out/$name.log"
    die "building the $name layer failed; see $out/$name.log"
  fi
  umount "$merged"
  merged=""
  # The resolver configuration was the build's, not the image's: the base's shows through.
  rm -f "$upper.partial/etc/resolv.conf"
  rmdir "$upper.partial/etc" 2>/dev/null || true
  find "$upper.partial" -name __pycache__ -prune -exec rm -rf {} +
  rm -rf "$upper.partial/root" "$work"
  mv "$upper.partial" "$upper"
}
# A venv from PyPI. pip verifies the index with the machine's CA bundle (which may include a
# CA that this machine's network needs), copied in for the build only: the image keeps
# Debian's own. Every step is checked: a function run as an `if` condition ignores `set -e`.
venv() {
  local dir=$1 requirements=$2
  cp "$requirements" "$merged/tmp/requirements.txt" || return 1
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$merged/tmp/build-ca.crt" || return 1
  # A clean environment: the machine's (CA paths, pip's local wheel folder) mean other files
  # inside the chroot.
  chroot "$merged" env -i PATH=/usr/bin:/bin HOME=/tmp python3 -m venv "$dir" || return 1
  chroot "$merged" env -i PATH=/usr/bin:/bin HOME=/tmp SSL_CERT_FILE=/tmp/build-ca.crt \
    "$dir/bin/pip" install --no-cache-dir --disable-pip-version-check --cert /tmp/build-ca.crt \
    -q -r /tmp/requirements.txt || return 1
  rm -f "$merged/tmp/requirements.txt" "$merged/tmp/build-ca.crt"
}
singleuser_layer() {
  venv /opt/notebook "$images/singleuser/requirements.txt" || return 1
  add_jovyan
}
proxy_layer() {
  mkdir -p "$merged/opt/chp" || return 1
  cp "$REPO_ROOT/package.json" "$REPO_ROOT/package-lock.json" "$merged/opt/chp/" || return 1
  # npm of the machine; the packages are plain JavaScript that the image's Node.js runs.
  (cd "$merged/opt/chp" && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts)
}
# jovyan (uid 1000), as in the upstream hub and notebook images: JupyterHub looks its user up.
add_jovyan() {
  chroot "$merged" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    useradd --create-home --uid 1000 --user-group --shell /bin/bash jovyan
}
hub_layer() {
  venv /opt/hub "$images/hub/requirements.txt" || return 1
  add_jovyan || return 1
  install -d -o 1000 -g 1000 "$merged/srv/jupyterhub"
}

if [ ! -s "$out/base.tar" ]; then
  # For pods that only need a shell and Python (the node's own checks, jobs in tests).
  pack "$BASE_IMAGE" "$out/base.tar" "$base" --entrypoint '["tini", "-g", "--"]' --cmd '["bash"]'
fi
if [ ! -s "$out/hub.tar" ]; then
  layer hub hub_layer
  pack "$HUB_IMAGE_REF" "$out/hub.tar" "$base" "$out/hub-layer" \
    --env PATH=/opt/hub/bin:/usr/local/bin:/usr/bin:/bin --workdir /srv/jupyterhub \
    --user 1000:1000 --entrypoint '["tini", "-g", "--"]' --cmd '["jupyterhub"]'
fi
if [ ! -s "$out/singleuser.tar" ]; then
  layer singleuser singleuser_layer
  pack "$SINGLEUSER_IMAGE" "$out/singleuser.tar" "$base" "$out/singleuser-layer" \
    --env PATH=/opt/notebook/bin:/usr/local/bin:/usr/bin:/bin --env HOME=/home/jovyan \
    --env SHELL=/bin/bash --workdir /home/jovyan --user 1000:1000 \
    --entrypoint '["tini", "-g", "--"]' --cmd '["jupyterhub-singleuser"]'
fi
if [ ! -s "$out/proxy.tar" ]; then
  layer proxy proxy_layer
  pack "$PROXY_IMAGE_REF" "$out/proxy.tar" "$base" "$out/proxy-layer" \
    --env PATH=/opt/chp/node_modules/.bin:/usr/local/bin:/usr/bin:/bin --user 65534:65534 \
    --entrypoint '["tini", "-g", "--"]' --cmd '["configurable-http-proxy"]'
fi
if [ ! -s "$out/coredns.tar" ]; then
  work=$(mktemp -d "$out/coredns.XXXXXX")
  mkdir -p "$work/rootfs/etc/coredns"
  cp "$(coredns_bin_dir)/coredns" "$work/rootfs/coredns"
  pack "$COREDNS_IMAGE" "$out/coredns.tar" "$work/rootfs" --entrypoint '["/coredns"]' \
    --user 65532:65532
  rm -rf "$work"
fi

if [ $((SECONDS - started)) -gt 1 ]; then
  echo "devcluster: images ready in $out ($((SECONDS - started))s)"
fi
