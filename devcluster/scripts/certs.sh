#!/usr/bin/env bash
# Generate the local control plane's PKI into $STATE_DIR/pki, once.
# CA; apiserver serving cert; client certs for admin (system:masters), the controller
# manager and the scheduler; the service-account signing key pair; the API server's client
# certificate for kubelets (logs, exec, port-forward).
#   certs.sh        the control plane's
#   certs.sh node   also the real node's: its kubelet (system:node:NAME) and kube-proxy
set -euo pipefail
source "$(dirname "$0")/common.sh"

pki="$STATE_DIR/pki"
mkdir -p "$pki"
chmod 700 "$pki"
cd "$pki"
command -v openssl >/dev/null || die "openssl is required to generate the cluster certificates"
days=3650

issue() {
  local name=$1 subject=$2 usage=$3 sans=${4:-}
  {
    echo "[ext]"
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$name.cnf"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$name.cnf" -extensions ext -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.cnf" ca.srl
  chmod 600 "$name.key"
}

# Issued into a cluster that already has its CA (made before these existed, or on demand).
issue_missing() {
  [ -s "$1.crt" ] || issue "$@"
}

if [ "${1:-}" = node ]; then
  [ -s ca.key ] || die "no cluster CA in $pki: start the control plane first"
  issue_missing "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  issue_missing kube-proxy "/CN=system:kube-proxy" clientAuth
  exit 0
fi
if [ -s ca.crt ] && [ -s sa.key ] && [ -s admin.crt ]; then
  issue_missing apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  exit 0
fi

rm -f ./*.crt ./*.key ./*.pub ./*.csr ./*.srl ./*.cnf
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$days" \
  -subj "/CN=hub-on-demand-devcluster-ca" 2>/dev/null

issue apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP"
issue admin "/O=system:masters/CN=devcluster-admin" clientAuth
issue controller-manager "/CN=system:kube-controller-manager" clientAuth
issue scheduler "/CN=system:kube-scheduler" clientAuth
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
rm -f ca.srl
chmod 600 ./*.key
echo "devcluster: certificates written to $pki"
