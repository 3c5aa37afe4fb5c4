# Names the cluster scripts share (sourced).
# shellcheck disable=SC2034
NODE_NAME=pipeline-k8s-node
BRIDGE=pipelinek8s0      # the CNI bridge (not podman's cni-podman0 nor the usual cni0)
POD_SUBNET=10.244.0.0/24
NETNS_PREFIX=cni-        # containerd 1.6 names the pods' network namespaces cni-<uuid>
CGROUP_ROOT=pipeline-k8s # the kubelet's --cgroup-root: all pods' cgroups are under it
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=6443
SANDBOX_IMAGE=localhost/pipeline-k8s-pause:1
# kernel settings the kubelet (its "kernel tunables") and the CNI bridge (ip_forward) change: up.sh
# saves them and down.sh puts them back
KERNEL_SETTINGS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward"
