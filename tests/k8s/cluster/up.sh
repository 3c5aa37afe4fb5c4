#!/usr/bin/env bash
# Starts a one-node Kubernetes on this machine for the tests, from the binaries build.sh makes and
# Debian's etcd, containerd, runc and CNI plugins: etcd, kube-apiserver (127.0.0.1:6443, Node and
# RBAC authorization, Pod Security admission; privileged pods allowed as in most clusters, so that
# Pod Security is what refuses them), kube-controller-manager, kube-scheduler, containerd
# and a kubelet (cgroupfs driver, its own cgroup root, a CNI bridge of its own). Loads the images
# named on the command line from podman's store into containerd, with a sandbox ("pause") image
# built here (Kubernetes' own comes from a registry). Waits until the node is Ready, then prints
# the admin kubeconfig's path on stdout.
#
# Everything lives in K8S_STATE_DIR (default /var/lib/pipeline-k8s); down.sh removes all of it,
# and runs by itself when a step here fails. Needs root: the kubelet and containerd manage
# mounts, cgroups, network namespaces and iptables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/k8s/cluster/lib.sh
source "$here/lib.sh"
state="${K8S_STATE_DIR:-/var/lib/pipeline-k8s}"
export K8S_STATE_DIR="$state"
say() { echo "tests/k8s/cluster/up.sh: $*" >&2; }
started=$SECONDS
failed() {
    local rc=$?
    say "failed (exit $rc); the last lines of its logs:"
    for log in "$state"/log/*.log; do [[ -f $log ]] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }; done
    bash "$here/down.sh"
    exit "$rc"
}
trap failed ERR
# Exit 3: this machine cannot run a node, for a reason that is not the project's (the tests skip).
cannot() { say "cannot start a cluster on this machine: $*"; exit 3; }
[[ $(id -u) -eq 0 ]] || cannot "needs root (mounts, cgroups, network namespaces, iptables)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || cannot "no overlay filesystem for containerd's snapshots"
for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" 10250 10248 10257 10259; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        [[ -d $state ]] || cannot "port $port is taken by something else"
    fi
done
if [[ -d $state ]]; then
    say "a cluster is already in $state: stopping it first"
    bash "$here/down.sh"
fi
bin=$(bash "$here/build.sh")
mkdir -p "$state"
for name in $KERNEL_SETTINGS; do echo "$name=$(sysctl -n "$name")"; done >"$state/kernel-settings"
export PATH="$bin:$PATH"
mkdir -p "$state"/{pki,log,pids,etcd,cni/net.d,kubelet,pod-logs,containerd/root,containerd/state}
pki="$state/pki"
node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | grep -oP 'src \K[0-9.]+' || true)
node_ip=${node_ip:-$(hostname -I | awk '{print $1}')}

# --- certificates: one CA, the API server's serving cert, a client cert per component ---------------
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pipeline-k8s-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt"
cert() {  # name subject [subjectAltName]
    local name=$1 subject=$2 san=${3:-}
    openssl_quiet req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr"
    local ext="$pki/$name.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' \
        "$([[ -n $san ]] && echo serverAuth,clientAuth || echo clientAuth)" >"$ext"
    [[ -n $san ]] && echo "subjectAltName=$san" >>"$ext"
    openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 2 -extfile "$ext" -out "$pki/$name.crt"
}
cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,IP:$node_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
cert admin "/O=system:masters/CN=pipeline-k8s-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
cert kubelet-serving "/CN=$NODE_NAME" "IP:$node_ip,IP:127.0.0.1,DNS:$NODE_NAME"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
kubeconfig() {  # name: a kubeconfig with that client cert
    cat >"$state/$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: pipeline-k8s
    cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$pki/ca.crt"}
users:
  - name: $1
    user: {client-certificate: "$pki/$1.crt", client-key: "$pki/$1.key"}
contexts:
  - name: pipeline-k8s
    context: {cluster: pipeline-k8s, user: $1}
current-context: pipeline-k8s
YAML
}
for name in admin controller-manager scheduler kubelet; do kubeconfig "$name"; done

run() {  # name command...: in the background, its own session, log and pid file
    local name=$1; shift
    setsid "$@" >"$state/log/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name"
}
wait_for() {  # what seconds command...
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then say "$what not ready after $seconds s"; return 1; fi
        sleep 0.5
    done
}
alive() { for name in "$@"; do kill -0 "$(cat "$state/pids/$name")" 2>/dev/null || { say "$name exited"; return 1; }; done; }

# --- control plane -------------------------------------------------------------------------------------
run etcd etcd --name pipeline-k8s --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "pipeline-k8s=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls ""
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
run kube-apiserver kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --advertise-address "$node_ip" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true --profiling=false
export KUBECONFIG="$state/admin.kubeconfig"
wait_for kube-apiserver 120 kubectl get --raw /readyz
run kube-controller-manager kube-controller-manager --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
run kube-scheduler kube-scheduler --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
say "control plane up ($((SECONDS - started)) s)"

# --- the node: containerd, CNI, the kubelet --------------------------------------------------------------
cat >"$state/cni/net.d/10-pipeline-k8s.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "pipeline-k8s", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$state/cni/ipam"}}]}
JSON
cat >"$state/containerd.toml" <<TOML
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$state/containerd.sock"
[ttrpc]
  address = "$state/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # root without CAP_SYS_RESOURCE may not lower a process' oom_score_adj
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
TOML
run containerd containerd --config "$state/containerd.toml"
ctr_=(ctr --address "$state/containerd.sock" --namespace k8s.io)
wait_for containerd 60 "${ctr_[@]}" version

# images: the sandbox's (a FROM-scratch image of build.sh's pause program) and the ones asked for
export CONTAINERS_CONF="$root/stack/containers.conf"
if ! podman image exists "$SANDBOX_IMAGE"; then
    context=$(mktemp -d)
    cp "$bin/pause" "$context/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$context/Containerfile"
    podman build --pull=never -q -t "$SANDBOX_IMAGE" -f "$context/Containerfile" "$context" >/dev/null
    rm -rf "$context"
fi
for image in "$SANDBOX_IMAGE" "$@"; do
    podman save --format docker-archive "$image" | "${ctr_[@]}" images import --digests - >/dev/null
    "${ctr_[@]}" images check "name==$image" | grep -q complete || { say "$image did not load into containerd"; false; }
done
say "images loaded ($((SECONDS - started)) s): $SANDBOX_IMAGE $*"

for hierarchy in /sys/fs/cgroup/*/; do
    [[ -w $hierarchy && ! -L ${hierarchy%/} ]] && mkdir -p "$hierarchy$CGROUP_ROOT"
done
cat >"$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$node_ip"
port: 10250
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: AlwaysAllow}
tlsCertFile: "$pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$pki/kubelet-serving.key"
containerRuntimeEndpoint: "unix://$state/containerd.sock"
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
# this machine's cgroups are v1 controllers beside a cgroup2 tree
failCgroupV1: false
failSwapOn: false
podLogsDir: "$state/pod-logs"
# images load from podman, not a registry: never collect them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
resolvConf: /etc/resolv.conf
staticPodPath: ""
YAML
run kubelet kubelet --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
    --root-dir "$state/kubelet" --hostname-override "$NODE_NAME" --node-ip "$node_ip" -v 1
wait_for "the node" 120 bash -c "kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
alive etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet
say "node $NODE_NAME Ready ($((SECONDS - started)) s)"
echo "$state/admin.kubeconfig"
