#!/usr/bin/env bash
# Stops the one-node test cluster that up.sh started and removes everything it left on the machine:
# its processes (by the ids up.sh recorded, and the container shims of its containerd), the pods'
# processes, mounts under the state directory and /run/netns, the CNI bridge, the kubelet's
# iptables chains and the cgroups. Idempotent; safe to run when nothing is up, and always exits 0.
set -uo pipefail
state="${K8S_STATE_DIR:-/var/lib/pipeline-k8s}"
# shellcheck source=tests/k8s/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

stop_pid() {  # name: SIGTERM, then SIGKILL after a few seconds
    local file="$state/pids/$1" pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

# the kubelet first, so that it restarts nothing while the pods go
stop_pid kubelet
# the pods' containers: kill every task of containerd's Kubernetes namespace, while it still runs
if [[ -S $state/containerd.sock ]]; then
    ctr_=(ctr --address "$state/containerd.sock" --namespace k8s.io)
    for task in $("${ctr_[@]}" tasks list -q 2>/dev/null); do
        "${ctr_[@]}" tasks kill --signal SIGKILL "$task" >/dev/null 2>&1
    done
    sleep 1
    for task in $("${ctr_[@]}" tasks list -q 2>/dev/null); do
        "${ctr_[@]}" tasks delete --force "$task" >/dev/null 2>&1
    done
fi
for name in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop_pid "$name"; done
# the shims outlive containerd: those serving this state's socket, by their ids
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $state/containerd.sock" 2>/dev/null); do
    # what a shim still runs (a pod's process, when a task could not be killed above)
    for child in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$child" 2>/dev/null; done
    kill -KILL "$pid" 2>/dev/null
done

# mounts: the pods' volumes, rootfs and network namespaces, deepest first
if [[ -d $state ]]; then
    findmnt -rn -o TARGET | grep -F "$state/" | sort -r | while read -r target; do
        umount -l "$target" 2>/dev/null
    done
fi
for netns in /run/netns/"$NETNS_PREFIX"*; do
    [[ -e $netns ]] || continue
    umount -l "$netns" 2>/dev/null
    rm -f "$netns"
done

ip link delete "$BRIDGE" >/dev/null 2>&1
# the folders containerd's shims and libcni make outside the state directory, when empty (a
# containerd of the machine's own would keep its files there)
for dir in /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd /var/lib/cni/results; do
    rmdir "$dir" 2>/dev/null
done
# the kubelet's chains (KUBE-FIREWALL drops traffic to 127/8 that does not come from loopback)
for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    for table in filter nat mangle; do
        rules=$("$tool" -t "$table" -S 2>/dev/null) || continue
        # the jumps from the built-in chains, then the chains themselves
        grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' <<<"$rules" | while read -r rule; do
            # shellcheck disable=SC2086
            "$tool" -t "$table" ${rule/-A/-D} 2>/dev/null
        done
        for chain in $(grep -oE '^-N KUBE-[A-Z0-9-]+' <<<"$rules" | cut -d' ' -f2); do
            "$tool" -t "$table" -F "$chain" 2>/dev/null
        done
        for chain in $(grep -oE '^-N KUBE-[A-Z0-9-]+' <<<"$rules" | cut -d' ' -f2); do
            "$tool" -t "$table" -X "$chain" 2>/dev/null
        done
    done
done

# cgroups: leaves first (rmdir removes only empty ones)
for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    root="$hierarchy$CGROUP_ROOT"
    [[ -d $root ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done

# the kernel settings the kubelet and the CNI bridge changed, as they were before up.sh
if [[ -f $state/kernel-settings ]]; then
    while IFS= read -r setting; do sysctl -q -w "$setting" 2>/dev/null; done <"$state/kernel-settings"
fi

rm -rf "$state"
exit 0
