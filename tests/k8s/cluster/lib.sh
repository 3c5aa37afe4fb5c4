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
