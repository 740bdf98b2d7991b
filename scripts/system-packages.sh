#!/usr/bin/env bash
# The Debian packages the quick start and the tests need, installed when missing: by `make up`
# (`up`: PostgreSQL and Redis), by `make test` and `.ci/run` (`test`: also Chromium for the
# browser tests, and Node.js for configurable-http-proxy), and `node` for the local cluster's
# optional real node (runc, netfilter tools, debootstrap for its images; DEVCLUSTER_NODE=real
# adds these to `test`). Run as root it installs them with apt-get;
# otherwise it prints the one command that does and stops.
set -euo pipefail
what=${1:-test}
packages=(postgresql redis-server openssl curl iproute2)
if [ "$what" = test ]; then
  packages+=(chromium fonts-dejavu-core)
fi
if [ "$what" = node ] || { [ "$what" = test ] && [ "${DEVCLUSTER_NODE:-}" = real ]; }; then
  packages+=(runc iptables ipset conntrack socat debootstrap util-linux)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm come with this kind of machine; Debian's only where they are missing.
if [ "$what" = test ] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
