"""The product's image and a one-node Kubernetes, for the tests that run them (tests/k8s/test_image.py,
test_cluster.py).

`make image` (stack/image.sh) builds the image from the repository's Dockerfile: with Docker where
there is an engine, else with podman and a local stand-in base. tests/k8s/cluster/up.sh starts the
cluster from binaries built from the Go module proxy (build.sh, cached in ~/.cache) and Debian's
etcd and containerd; down.sh removes everything it left, and a session fixture's finalizer runs it
whatever the tests did.

When the machine cannot run them for a reason outside the project (not Linux, not root, neither a
Docker engine nor podman nor apt-get to install it, no Go), these tests skip with that reason in
one line; PIPELINE_K8S_TESTS=require turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s import CRDS_DIR, ROOT, Obj, crd_schemas

IMAGE_SCRIPT = ROOT / "stack" / "image.sh"
CLUSTER = ROOT / "tests" / "k8s" / "cluster"
STATE_DIR = Path(os.environ.get("K8S_STATE_DIR", "/var/lib/pipeline-k8s"))
FIELD_MANAGER = "pipeline-tests"
# the image's user, as the Dockerfile and the pods' securityContext give it
UID = 10001


def machine_unfit() -> str | None:
    """Why this machine cannot build and run the image and a node, when that is no fault of the project."""
    if sys.platform != "linux":
        return f"not Linux ({sys.platform})"
    if os.geteuid() != 0:
        return "not root: a node's containerd and kubelet need mounts, cgroups, network namespaces, iptables"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup"
    if not (shutil.which("podman") or shutil.which("apt-get") or shutil.which("docker")):
        return "neither a Docker engine nor podman, nor apt-get to install podman"
    if not shutil.which("go"):
        return "no Go toolchain to build Kubernetes' binaries from the Go module proxy"
    return None


def require_machine() -> None:
    why = machine_unfit()
    if why is None:
        return
    line = f"the image and cluster tests cannot run on this machine: {why}"
    if os.environ.get("PIPELINE_K8S_TESTS") == "require":
        pytest.fail(line)
    pytest.skip(line)


def _script(path: Path, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs a project script; its stderr (progress) goes to the test's output, its stdout is returned.
    Exit status 3 means the machine cannot do it for a reason outside the project (the script says
    which in its last line): the tests skip."""
    result = subprocess.run(["bash", str(path), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    sys.stderr.write(result.stderr)
    if result.returncode == 3:
        why = (result.stderr.strip().splitlines() or ["(no reason given)"])[-1]
        if os.environ.get("PIPELINE_K8S_TESTS") == "require":
            pytest.fail(why)
        pytest.skip(why)
    if result.returncode != 0:
        pytest.fail(f"{path.relative_to(ROOT)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


@functools.cache
def image() -> str:
    """The image's name, built (or found up to date) by `make image`'s script."""
    return _script(IMAGE_SCRIPT, timeout=1800)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "stack" / "containers.conf")}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return result


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl_path: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}\n{result.stderr[-4000:]}")
        return result

    def apply(self, objects: list[Obj], *extra: str) -> subprocess.CompletedProcess[str]:
        """Server-side apply; returns kubectl's result (its stderr holds the API server's warnings)."""
        text = yaml.safe_dump_all(objects, sort_keys=False)
        return self.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                            *extra, input=text, check=False)

    def get(self, kind: str, name: str = "", namespace: str | None = None) -> Any:
        where = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", kind, *([name] if name else []), *where, "-o", "json").stdout)

    def namespace(self, name: str, pod_security: str = "restricted", **labels: str) -> None:
        """A namespace whose Pod Security admission enforces `pod_security` and warns at restricted."""
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": pod_security,
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "latest", **labels}}}
        result = self.apply([ns])
        assert result.returncode == 0, result.stderr

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def wait_ready(self, kind: str, name: str, namespace: str, timeout: float) -> None:
        self.kubectl("rollout", "status", f"{kind}/{name}", "-n", namespace, f"--timeout={int(timeout)}s",
                     timeout=timeout + 30)

    def logs(self, pod: str, namespace: str, previous: bool = False) -> str:
        args = ["logs", pod, "-n", namespace] + (["--previous"] if previous else [])
        result = self.kubectl(*args, check=False)
        return result.stdout + result.stderr

    def describe(self, namespace: str) -> str:
        """What went wrong, for an assertion's message: pods, events."""
        pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
        return f"pods:\n{pods}\nevents:\n{events[-4000:]}"


@contextlib.contextmanager
def one_at_a_time(timeout: float = 1800) -> Iterator[None]:
    """The machine has one node's worth of ports and paths: a second test session (another
    checkout's `make test`) waits here until the first has torn its cluster down."""
    lock = Path(os.environ.get("TMPDIR", "/tmp")) / "pipeline-k8s.lock"
    with lock.open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session has held the one-node cluster ({lock}) for {timeout:.0f} s")
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_cluster(*images: str) -> Cluster:
    started = time.monotonic()
    kubeconfig = Path(_script(CLUSTER / "up.sh", *images, timeout=2400))
    bin_dir = Path(_script(CLUSTER / "build.sh", timeout=60))
    cluster = Cluster(kubeconfig, bin_dir / "kubectl")
    sys.stderr.write(f"tests/k8s: one-node cluster up in {time.monotonic() - started:.0f} s\n")
    return cluster


def stop_cluster() -> None:
    subprocess.run(["bash", str(CLUSTER / "down.sh")], timeout=300, check=False)


def _lib_names() -> dict[str, str]:
    """The names tests/k8s/cluster/lib.sh sets (NAME=value lines, comments and quotes dropped)."""
    return {name: value.split("#")[0].strip().strip('"') for line in (CLUSTER / "lib.sh").read_text().splitlines()
            if "=" in line and not line.startswith("#") for name, value in [line.split("=", 1)]}


def kernel_settings() -> dict[str, str]:
    """The kernel settings the kubelet and the CNI bridge change, as they are now."""
    return {name: Path("/proc/sys", *name.split(".")).read_text().strip()
            for name in _lib_names()["KERNEL_SETTINGS"].split()}


def leftovers(kernel_before: dict[str, str]) -> list[str]:
    """What of the cluster is still on the machine (after down.sh there should be nothing): its
    state directory, processes, mounts, bridge, iptables chains, cgroups, changed kernel settings."""
    names = _lib_names()
    bridge, cgroup_root = names["BRIDGE"], names["CGROUP_ROOT"]
    found = []
    if STATE_DIR.exists():
        found.append(f"{STATE_DIR} is still there")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(STATE_DIR) in line.split()[4]]
    found += [f"mount {m}" for m in mounts]
    processes = subprocess.run(["pgrep", "-a", "-f", f"{STATE_DIR}/"], capture_output=True, text=True).stdout
    found += [f"process {p}" for p in processes.splitlines()]
    if Path(f"/sys/class/net/{bridge}").exists():
        found.append(f"network bridge {bridge}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup_root}")]
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [f"iptables -t {table} {r}" for r in rules.splitlines() if "KUBE-" in r]
    found += [f"kernel setting {name} = {now} (was {kernel_before[name]})"
              for name, now in kernel_settings().items() if now != kernel_before[name]]
    return found


def install_crds(cluster: Cluster) -> list[str]:
    """Every CRD the manifests' custom resources need (Strimzi's, the prometheus-operator's: made
    by the test tools into CRDS_DIR), server-side applied and Established. Returns their names."""
    crd_schemas()  # makes the missing ones
    crds = [doc for path in sorted(CRDS_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"]
    result = cluster.apply(crds)
    assert result.returncode == 0, result.stderr
    names = [crd["metadata"]["name"] for crd in crds]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                    *(f"crd/{name}" for name in names), timeout=180)
    return names
