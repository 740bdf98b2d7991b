#!/usr/bin/env bash
# The optional real node of the local cluster: kubelet + containerd + Debian's runc, CNI
# (bridge, host-local, loopback, portmap), kube-proxy (iptables mode) and kube-router
# (NetworkPolicy enforcement only), beside kwok's simulated nodes.
#   node.sh up     start it (the control plane must run: up.sh calls this with NODE=real)
#   node.sh down   stop it and remove every process, mount, cgroup, interface, route and
#                  network rule it made (down.sh calls this)
#   node.sh ingress  (re)apply the local cluster's ingress on the running node
#
# Isolation from the machine and from other clusters on it:
# - every node process runs in the network namespace $NODE_NETNS, so kube-proxy's and
#   kube-router's iptables rules and ipsets, the pod bridge and the ports listened on exist
#   only there; deleting the namespace deletes them. The host sees a veth pair and two routes.
# - the kubelet runs in a mount namespace of its own, where the kernel settings it insists on
#   (vm.overcommit_memory, kernel.panic, ...) read as it wants, so it never rewrites the
#   machine's; its root folder is a shared mount, so the volumes it mounts reach containerd.
# - everything, containers included, lives under the cgroup /$NODE_CGROUP.
# - kube-proxy is told to leave the machine-wide conntrack table size alone.
set -euo pipefail
source "$(dirname "$0")/common.sh"

NODE_DIR="$STATE_DIR/node"
IMAGES_DIR=$(images_dir)
PKI="$STATE_DIR/pki"
LOGS="$STATE_DIR/logs"
PIDS="$STATE_DIR/pids"
CONTAINERD_SOCK="$NODE_DIR/containerd/containerd.sock"
K8S_BIN=$(kubernetes_bin_dir)
KUBECTL="$K8S_BIN/kubectl"
kubectl() { "$KUBECTL" --kubeconfig "$STATE_DIR/admin.kubeconfig" "$@"; }
in_netns() { nsenter --net="/run/netns/$NODE_NETNS" "$@"; }
CGROUP_CONTROLLERS=()
for dir in /sys/fs/cgroup/*/; do
  [ -e "$dir/cgroup.procs" ] && CGROUP_CONTROLLERS+=("$(basename "$dir")")
done

# Start one node component in the node's cgroup (and so its children: shims, containers) and
# network namespace, in its own process group, with its own log and pid file.
start() {
  local name=$1
  shift
  if running "$name"; then
    echo "devcluster: $name already runs (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  setsid bash -c '
    cgroup=$1 netns=$2
    shift 2
    for controller in /sys/fs/cgroup/*/; do
      [ -e "$controller$cgroup/system/cgroup.procs" ] && echo $$ > "$controller$cgroup/system/cgroup.procs"
    done
    exec "$@"' node-component "$NODE_CGROUP" "$NODE_NETNS" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$PIDS/$name.pid"
  echo "devcluster: started $name (pid $!, log $LOGS/$name.log)"
}

setup_cgroups() {
  local controller
  for controller in "${CGROUP_CONTROLLERS[@]}"; do
    local base="/sys/fs/cgroup/$controller"
    mkdir -p "$base/$NODE_CGROUP/system"
    if [ "$controller" = cpuset ]; then
      # A new cpuset cgroup starts with no CPUs and no memory nodes: inherit the parent's.
      for level in "$base/$NODE_CGROUP" "$base/$NODE_CGROUP/system"; do
        cat "$base/cpuset.cpus" > "$level/cpuset.cpus"
        cat "$base/cpuset.mems" > "$level/cpuset.mems"
      done
    fi
  done
}

setup_network() {
  if [ ! -e "/run/netns/$NODE_NETNS" ]; then
    ip netns add "$NODE_NETNS"
  fi
  if ! ip link show "$NODE_HOST_VETH" >/dev/null 2>&1; then
    for cidr in "$NODE_POD_CIDR" "$SERVICE_CIDR"; do
      if ip route show "$cidr" | grep -q .; then
        die "the host already routes $cidr ($(ip route show "$cidr")): another cluster's real node? Give this one other ranges (DEVCLUSTER_NODE_POD_CIDR, DEVCLUSTER_SERVICE_CIDR)"
      fi
    done
    ip link add "$NODE_HOST_VETH" type veth peer name eth0 netns "$NODE_NETNS"
    ip addr add "$NODE_HOST_IP/30" dev "$NODE_HOST_VETH"
    ip link set "$NODE_HOST_VETH" up
    in_netns ip link set lo up
    in_netns ip addr add "$NODE_IP/30" dev eth0
    in_netns ip link set eth0 up
    in_netns ip route add default via "$NODE_HOST_IP"
    ip route add "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_VETH"
    ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$NODE_HOST_VETH"
  fi
  # Per-namespace settings: the node routes its pods' traffic, and bridged pod traffic passes
  # through iptables (Services, NetworkPolicies). The host's own settings are not touched.
  in_netns sysctl -qw net.ipv4.ip_forward=1
  in_netns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    die "net.bridge.bridge-nf-call-iptables cannot be set in the node's namespace: the kernel lacks br_netfilter"
  in_netns sysctl -qw net.ipv4.conf.all.route_localnet=1
}

write_configs() {
  mkdir -p "$NODE_DIR"/{containerd,kubelet,cni/net.d,cni/ipam,pod-logs} "$NODE_DIR/kubelet-pki"
  cat > "$NODE_DIR/cni/net.d/10-hod.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "$NODE_NETNS",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  cat > "$NODE_DIR/containerd/config.toml" <<TOML
version = 3
root = '$NODE_DIR/containerd/root'
state = '$NODE_DIR/containerd/state'

[grpc]
  address = '$CONTAINERD_SOCK'
[ttrpc]
  address = '$CONTAINERD_SOCK.ttrpc'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.runtime']
    # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower its OOM
    # score below containerd's (0): keep containers' scores at or above it rather than fail.
    restrict_oom_score_adj = true
    # Pod network namespaces live under the node's state, not in the machine's /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '${DEVCLUSTER_RUNC:-$(command -v runc)}'
          SystemdCgroup = false
          Root = '$NODE_DIR/runc'
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$(cni_plugins_bin_dir)']
      conf_dir = '$NODE_DIR/cni/net.d'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.server.v1.debug']
    address = ''
  [plugins.'io.containerd.server.v1.metrics']
    address = ''
TOML
  # The node reaches the API server through the host end of its link (node-apiserver-link);
  # the certificate names it `kubernetes`.
  local server="https://$NODE_HOST_IP:$APISERVER_PORT"
  write_kubeconfig "$NODE_DIR/kubelet.kubeconfig" "node-$NODE_NAME" "$server" kubernetes
  write_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" kube-proxy "$server" kubernetes
  write_kubeconfig "$NODE_DIR/kube-router.kubeconfig" admin "$server" kubernetes
  # Pods resolve cluster names through CoreDNS (clusterDNS) and nothing beyond: no upstream.
  : > "$NODE_DIR/resolv.conf"
  cat > "$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
cgroupsPerQOS: true
# This machine has cgroup v1 only; kubelet 1.35+ refuses it unless told otherwise.
failCgroupV1: false
failSwapOn: false
podLogsDir: $NODE_DIR/pod-logs
resolvConf: $NODE_DIR/resolv.conf
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
maxPods: 110
serializeImagePulls: false
# The machine's disk is shared; the node evicts only when it is nearly full.
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
# No CAP_SYS_RESOURCE here (see restrict_oom_score_adj above).
oomScoreAdj: 0
YAML
  cat > "$NODE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
mode: iptables
oomScoreAdj: 0
hostnameOverride: $NODE_NAME
clusterCIDR: $NODE_POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: [$NODE_IP/32]
# nf_conntrack_max is machine-wide: leave it (and the timeouts) as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

# The kubelet's mount namespace: the kernel settings it checks read as it wants them there
# (bind mounts over /proc/sys files, visible to it alone); its root folder, a shared mount made
# in the host's namespace first, carries the volumes it mounts back to containerd's.
kubelet_sysctls="vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000"
prepare_kubelet_root() {
  if ! mountpoint -q "$NODE_DIR/kubelet"; then
    mount --bind "$NODE_DIR/kubelet" "$NODE_DIR/kubelet"
  fi
  mount --make-rshared "$NODE_DIR/kubelet"
  mkdir -p "$NODE_DIR/sysctl"
  local entry
  for entry in $kubelet_sysctls; do
    echo "${entry#*=}" > "$NODE_DIR/sysctl/$(sysctl_file "$entry")"
  done
}
sysctl_file() {
  local name=${1%%=*}
  echo "${name//\//.}"
}

import_images() {
  local archive
  for archive in "$IMAGES_DIR"/*.tar; do
    [ -e "$archive" ] || continue
    "$(containerd_bin_dir)/ctr" --address "$CONTAINERD_SOCK" -n k8s.io images import \
      --platform linux/amd64 "$archive" >/dev/null ||
      die "importing $archive into the node's containerd failed"
  done
}

up() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (network namespaces, mounts, cgroups)"
  for tool in runc iptables ipset nsenter unshare socat conntrack; do
    command -v "$tool" >/dev/null ||
      die "the real node needs '$tool' (Debian: bash scripts/system-packages.sh node)"
  done
  [ -s "$STATE_DIR/admin.kubeconfig" ] || die "the control plane does not run: make cluster first"
  "$DEVCLUSTER_DIR/scripts/build.sh" node
  "$DEVCLUSTER_DIR/scripts/images.sh"
  "$DEVCLUSTER_DIR/scripts/certs.sh" node
  mkdir -p "$LOGS" "$PIDS"
  setup_cgroups
  setup_network
  write_configs
  prepare_kubelet_root

  # The API server listens on the host's loopback only; the node reaches it on the host end
  # of its link, and so do pods through the `kubernetes` Service (see the EndpointSlice below).
  start node-apiserver-link socat \
    "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$APISERVER_PORT"
  PATH="$(containerd_bin_dir):$PATH" start containerd \
    nsenter --net="/run/netns/$NODE_NETNS" "$(containerd_bin_dir)/containerd" \
    --config "$NODE_DIR/containerd/config.toml"
  containerd_ready() { "$(containerd_bin_dir)/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }
  wait_for containerd 60 containerd_ready
  import_images

  local mounts="" entry
  for entry in $kubelet_sysctls; do
    mounts+="mount --bind $NODE_DIR/sysctl/$(sysctl_file "$entry") /proc/sys/${entry%%=*}; "
  done
  start kubelet unshare --mount --propagation unchanged bash -c "
    set -e
    mount --make-rprivate /proc
    $mounts
    exec nsenter --net=/run/netns/$NODE_NETNS $(kubelet_bin_dir)/kubelet \
      --config $NODE_DIR/kubelet.yaml --kubeconfig $NODE_DIR/kubelet.kubeconfig \
      --root-dir $NODE_DIR/kubelet --cert-dir $NODE_DIR/kubelet-pki \
      --hostname-override $NODE_NAME --node-ip $NODE_IP --node-labels $NODE_LABEL \
      --v 1"
  node_registered() { kubectl get node "$NODE_NAME" >/dev/null 2>&1; }
  wait_for kubelet 90 node_registered
  # No controller allocates pod ranges here; the node's is fixed. kube-router reads it.
  if [ -z "$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')" ]; then
    kubectl patch node "$NODE_NAME" --type merge \
      -p "{\"spec\":{\"podCIDR\":\"$NODE_POD_CIDR\",\"podCIDRs\":[\"$NODE_POD_CIDR\"]}}" >/dev/null
  fi
  # The `kubernetes` Service has no endpoints in this cluster (the API server's endpoint
  # reconciler is off, it listens on loopback): point it at the node's way to the API server.
  kubectl apply --server-side --field-manager devcluster -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-real-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: devcluster
addressType: IPv4
endpoints:
- addresses: [$NODE_HOST_IP]
  conditions: {ready: true}
ports:
- {name: https, port: $APISERVER_PORT, protocol: TCP}
YAML

  start kube-proxy nsenter --net="/run/netns/$NODE_NETNS" "$(kubelet_bin_dir)/kube-proxy" \
    --config "$NODE_DIR/kube-proxy.yaml"
  start kube-router nsenter --net="/run/netns/$NODE_NETNS" "$(kube_router_bin_dir)/kube-router" \
    --kubeconfig "$NODE_DIR/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --service-cluster-ip-range "$SERVICE_CIDR" --health-port "$KUBE_ROUTER_HEALTH_PORT" \
    --metrics-port 0
  cluster_dns
  local_ingress
  # The controller manager's development-only hostPath provisioner makes each volume's folder
  # root's and 0750, and the kubelet applies no fsGroup to hostPath volumes, so no pod that
  # runs as a user (as every hub's pods do) could write to its claim. Real storage drivers
  # honour fsGroup; here the folders of this cluster's volumes are opened to the pods instead
  # (development only: the folders are on this machine, under /tmp/hostpath_pv).
  start volume-permissions bash -c "
    while true; do
      '$KUBECTL' --kubeconfig '$STATE_DIR/admin.kubeconfig' get pv \
        -o jsonpath='{range .items[*]}{.spec.hostPath.path}{\"\\n\"}{end}' 2>/dev/null |
        while read -r path; do
          case \$path in /tmp/hostpath_pv/*) [ -d \"\$path\" ] && chmod 0777 \"\$path\" ;; esac
        done
      sleep 2
    done"
  node_ready() {
    [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_for kubelet 120 node_ready
  echo "devcluster: real node $NODE_NAME is ready (pods $NODE_POD_CIDR, Services $SERVICE_CIDR, via $NODE_HOST_VETH)"
}

# CoreDNS as the cluster's DNS (kube-system/kube-dns, the address kubelet gives pods), on the
# real node: hubs find their hub and proxy Services by name, and their NetworkPolicies'
# DNS rule (egress to kube-system on port 53) is exercised as it is in a production cluster.
cluster_dns() {
  kubectl apply --server-side --field-manager devcluster -f - >/dev/null <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "devcluster:coredns"}
rules:
- apiGroups: [""]
  resources: [services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "devcluster:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "devcluster:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
        cache 30
        loop
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      nodeSelector: {${NODE_LABEL%%=*}: ${NODE_LABEL#*=}}
      tolerations: [{key: $NODE_TAINT_KEY, operator: Exists, effect: NoSchedule}]
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}}
        livenessProbe: {httpGet: {path: /health, port: 8080}}
        resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 128Mi}}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
YAML
}

# The local cluster's ingress controller (README: the local cluster's ingress): a pod in
# $INGRESS_NAMESPACE, the namespace hubs' NetworkPolicies let reach their proxies (the portal's
# INGRESS_NAMESPACE), serving every Ingress of class $INGRESS_CLASS over TLS at $INGRESS_IP:443.
# Its certificate (*.$INGRESS_HUBS_DOMAIN) is signed by a CA of its own, in $INGRESS_TLS_DIR.
local_ingress() {
  local tls=$INGRESS_TLS_DIR
  if [ ! -s "$tls/tls.crt" ]; then
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.crt" \
      -days 3650 -subj "/CN=devcluster ingress CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$tls/tls.key" -out "$tls/tls.csr" \
      -subj "/CN=*.$INGRESS_HUBS_DOMAIN" 2>/dev/null
    openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 3650 -out "$tls/tls.crt" 2>/dev/null \
      -extfile <(printf 'subjectAltName=DNS:*.%s\nextendedKeyUsage=serverAuth\n' "$INGRESS_HUBS_DOMAIN")
    rm -f "$tls/tls.csr" "$tls/ca.srl"
  fi
  kubectl apply --server-side --field-manager devcluster -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $INGRESS_NAMESPACE}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: $INGRESS_CLASS}
spec: {controller: hub-on-demand.dev/devcluster-ingress}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ingress, namespace: $INGRESS_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "devcluster:ingress"}
rules:
- {apiGroups: [""], resources: [services], verbs: [list]}
- {apiGroups: [networking.k8s.io], resources: [ingresses], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "devcluster:ingress"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "devcluster:ingress"}
subjects: [{kind: ServiceAccount, name: ingress, namespace: $INGRESS_NAMESPACE}]
YAML
  kubectl -n "$INGRESS_NAMESPACE" create configmap ingress \
    --from-file=ingress.py="$DEVCLUSTER_DIR/ingress/ingress.py" --dry-run=client -o yaml |
    kubectl apply --server-side --field-manager devcluster --force-conflicts -f - >/dev/null
  kubectl -n "$INGRESS_NAMESPACE" create secret tls ingress-tls \
    --cert="$tls/tls.crt" --key="$tls/tls.key" --dry-run=client -o yaml |
    kubectl apply --server-side --field-manager devcluster --force-conflicts -f - >/dev/null
  kubectl apply --server-side --field-manager devcluster -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: $INGRESS_NAMESPACE}
spec:
  replicas: 1
  selector: {matchLabels: {app: ingress}}
  template:
    metadata:
      labels: {app: ingress}
      annotations: {devcluster/program: "$(sha256sum "$DEVCLUSTER_DIR/ingress/ingress.py" | cut -c1-12)"}
    spec:
      serviceAccountName: ingress
      nodeSelector: {${NODE_LABEL%%=*}: ${NODE_LABEL#*=}}
      tolerations: [{key: $NODE_TAINT_KEY, operator: Exists, effect: NoSchedule}]
      securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: ingress
        image: $BASE_IMAGE
        imagePullPolicy: Never
        command: [python3, /etc/ingress/program/ingress.py]
        env:
        - {name: INGRESS_CLASS, value: $INGRESS_CLASS}
        - {name: LISTEN_PORT, value: "8443"}
        - {name: CERT_DIR, value: /etc/ingress/tls}
        ports: [{name: https, containerPort: 8443}]
        readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 2}
        resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {memory: 128Mi}}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: program, mountPath: /etc/ingress/program, readOnly: true}
        - {name: tls, mountPath: /etc/ingress/tls, readOnly: true}
      volumes:
      - {name: program, configMap: {name: ingress}}
      - {name: tls, secret: {secretName: ingress-tls, defaultMode: 0444}}
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: $INGRESS_NAMESPACE}
spec:
  clusterIP: $INGRESS_IP
  selector: {app: ingress}
  ports: [{name: https, port: 443, targetPort: https}]
YAML
}

# Kill every process in the node's cgroup tree (components, shims, containers).
kill_cgroup_tree() {
  local signal=$1 controller=${CGROUP_CONTROLLERS[0]:-pids} pid
  [ -d "/sys/fs/cgroup/$controller/$NODE_CGROUP" ] || return 0
  for pid in $(find "/sys/fs/cgroup/$controller/$NODE_CGROUP" -name cgroup.procs -exec cat {} +); do
    kill "-$signal" "$pid" 2>/dev/null || true
  done
}

cgroup_tree_empty() {
  local controller=${CGROUP_CONTROLLERS[0]:-pids}
  [ ! -d "/sys/fs/cgroup/$controller/$NODE_CGROUP" ] ||
    [ -z "$(find "/sys/fs/cgroup/$controller/$NODE_CGROUP" -name cgroup.procs -exec cat {} +)" ]
}

down() {
  # The shims' sockets are named after containerd's socket, the namespace and the sandbox's
  # id (containerd's pkg/shim.SocketAddress); a shim killed below leaves its socket behind.
  local containers="" id
  if running containerd; then
    containers=$("$(containerd_bin_dir)/ctr" --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null || true)
  fi
  for ((i = ${#NODE_COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${NODE_COMPONENTS[i]}"
  done
  # What is left: containers and their shims.
  kill_cgroup_tree TERM
  for _ in $(seq 1 25); do
    cgroup_tree_empty && break
    sleep 0.2
  done
  kill_cgroup_tree KILL
  for _ in $(seq 1 25); do
    cgroup_tree_empty && break
    sleep 0.2
  done
  # Mounts under the node's folder (volumes, overlay snapshots, pod network namespaces, the
  # kubelet's shared root), deepest first.
  if [ -d "$NODE_DIR" ]; then
    local mnt
    awk '{print $5}' /proc/self/mountinfo | grep -F "$NODE_DIR" | sort -r | while read -r mnt; do
      umount -l "$mnt" 2>/dev/null || true
    done
  fi
  # The namespace takes its interfaces (and so the host's veth and routes), iptables rules and
  # ipsets with it.
  if [ -e "/run/netns/$NODE_NETNS" ]; then
    ip netns delete "$NODE_NETNS"
    echo "devcluster: removed network namespace $NODE_NETNS"
  fi
  ip link delete "$NODE_HOST_VETH" 2>/dev/null || true
  local controller
  for controller in "${CGROUP_CONTROLLERS[@]}"; do
    [ -d "/sys/fs/cgroup/$controller/$NODE_CGROUP" ] || continue
    find "/sys/fs/cgroup/$controller/$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$NODE_DIR"
  # containerd puts its shims' sockets in /run/containerd/s whatever its state folder: remove
  # this node's, and the folder if no other containerd uses it.
  for id in $containers; do
    rm -f "/run/containerd/s/$(printf '%s' "$CONTAINERD_SOCK/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
  done
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
}

case ${1:-} in
  up) up ;;
  down) down ;;
  ingress) local_ingress ;;
  *) die "usage: node.sh up|down|ingress" ;;
esac
