"""The image, built from the repository's Dockerfile (`make image`) and run the way the pods run it:
read-only root, the image's uid 10001, no capabilities, a data volume at /data for the worker and a
64 MiB tmpfs at /tmp, on the host's network to the local brokers. A scripted fleet goes through the
two containers and every operation comes out; SIGTERM stops each within the grace period its
manifest gives it; nothing is written outside the volumes."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cluster, power_fleet
from tests.support.bridge import AMQP_URL, KAFKA, cleanup_amqp, delete_topics
from tests.support.bridge import run as run_async
from tests.support.eventually import eventually
from tests.support.k8s import Rendered, render
from tests.support.oslo_rabbit import wait_for_queue
from tests.support.ports import free_port

# With the brokers' tests: building the image is no quick unit test (`make unit` leaves it out).
pytestmark = pytest.mark.integration

REBUILD_WARNING = "did not stop cleanly"


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    cluster.require_machine()
    # podman's default network would leave a bridge and iptables chains on the machine: the
    # containers use the host's network or none
    bridge = Path("/sys/class/net/cni-podman0")
    there_before = bridge.exists()
    yield cluster.image()
    assert there_before or not bridge.exists(), "a container of these tests used podman's default network"


def grace_seconds(component: str) -> int:
    """terminationGracePeriodSeconds of the component's pods, as both overlays render it."""
    graces = set()
    for overlay in ("dev", "production"):
        for workload in Rendered(overlay, render(overlay)).workloads():
            if workload["metadata"]["name"] == f"pipeline-{component}":
                graces.add(workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    (grace,) = graces
    return int(grace)


def test_the_image_has_the_user_entrypoint_and_files_the_pods_expect(image: str) -> None:
    conf = json.loads(cluster.podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert conf["User"] == f"{cluster.UID}:{cluster.UID}", conf["User"]
    assert conf["Entrypoint"] == ["pipeline"], "exec form: `pipeline` is PID 1 and gets SIGTERM itself"
    env = dict(item.split("=", 1) for item in conf["Env"])
    assert env["WORKER_DATA_DIR"] == "/data" and env["HOME"].startswith("/tmp")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert set(conf["ExposedPorts"]) == {"6066/tcp", "9108/tcp"}
    for overlay in ("dev", "production"):
        for workload in Rendered(overlay, render(overlay)).workloads():
            security = workload["spec"]["template"]["spec"]["securityContext"]
            assert (security["runAsUser"], security["runAsGroup"]) == (cluster.UID, cluster.UID)
    # inside, as the pods run it: the user, the schemas, the data dir it may write, no build leftovers
    probe = (
        "import os, pathlib, json; print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),"
        " 'avro': sorted(p.name for p in pathlib.Path(os.environ['PIPELINE_AVRO_DIR']).glob('*.avsc')),"
        " 'data_owner': [os.stat('/data').st_uid, os.stat('/data').st_gid],"
        " 'leftovers': [p for p in ('/src', '/root/.cache/pip', '/tmp/pip') if os.path.exists(p)]}))"
    )
    out = cluster.podman("run", "--rm", "--network", "none", "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL",
                         "--entrypoint", "python", image, "-c", probe).stdout
    seen = json.loads(out)
    assert (seen["uid"], seen["gid"]) == (cluster.UID, cluster.UID)
    assert seen["avro"], "the Avro schemas are in PIPELINE_AVRO_DIR"
    assert seen["data_owner"] == [cluster.UID, cluster.UID], "a volume mounted at /data starts as the user's"
    assert seen["leftovers"] == [], "no build tree or pip cache in the runtime image"
    help_out = cluster.podman("run", "--rm", "--network", "none", "--read-only", "--read-only-tmpfs=false", image, "--help").stdout
    assert "bridge" in help_out and "worker" in help_out


class Container:
    """One `pipeline` container, run as a pod runs it."""

    def __init__(self, image: str, name: str, *args: str, volume: str | None = None) -> None:
        self.name = name
        mounts = ["-v", f"{volume}:/data"] if volume else []
        cluster.podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--read-only-tmpfs=false",
                       "--tmpfs", "/tmp:rw,size=64m,mode=1777", *mounts, "--user", f"{cluster.UID}:{cluster.UID}",
                       "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                       "-e", f"KAFKA_BOOTSTRAP_SERVERS={KAFKA}", "-e", f"AMQP_URL={AMQP_URL}", image, *args)

    def logs(self) -> str:
        result = cluster.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = cluster.podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
        if state != "true":
            raise AssertionError(f"{self.name} exited:\n{self.logs()[-3000:]}")
        return True

    def sigterm(self, grace: int) -> tuple[int, float]:
        """SIGTERM, as the kubelet sends it; (exit code, seconds to exit). Killed after `grace`."""
        started = time.monotonic()
        cluster.podman("kill", "--signal", "TERM", self.name)
        result = cluster.podman("wait", self.name, check=False, timeout=grace + 5) if grace else None
        took = time.monotonic() - started
        assert result is not None
        return int(result.stdout.strip() or -1), took

    def diff(self) -> list[str]:
        return written_outside_volumes(self.name)

    def remove(self) -> None:
        cluster.podman("rm", "-f", "-t", "0", self.name, check=False)


# what podman itself changes in every container: the directory of the files it mounts over
PODMAN_OWN = {"C /etc", "A /etc/hosts", "A /etc/hostname", "A /etc/resolv.conf", "C /run", "A /run/.containerenv"}


def written_outside_volumes(container: str) -> list[str]:
    """The container's changes to its image's filesystem (`podman diff`), but podman's own."""
    lines = cluster.podman("diff", container).stdout.splitlines()
    return [line for line in lines if line.strip() and line.strip() not in PODMAN_OWN]


def test_the_check_of_what_a_container_wrote_sees_a_write(image: str, unique: str) -> None:
    name = f"pipeline-test-{unique}-writer"
    try:
        cluster.podman("run", "--name", name, "--network", "none", "--user", "0", "--entrypoint", "python", image,
                       "-c", "open('/opt/written', 'w').write('x')")
        assert "A /opt/written" in written_outside_volumes(name)
    finally:
        cluster.podman("rm", "-f", name, check=False)


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
        return response.status == 200


@pytest.fixture
def names(unique: str) -> Iterator[dict[str, str]]:
    names = {"prefix": f"img{unique}.notifications.", "out": f"img{unique}.pipeline.", "queue": f"img-{unique}",
             "app": f"img-{unique}", "volume": f"pipeline-test-{unique}"}
    yield names
    for suffix in ("bridge", "worker", "worker-again"):
        cluster.podman("rm", "-f", "-t", "0", f"pipeline-test-{unique}-{suffix}", check=False)
    cluster.podman("volume", "rm", "-f", names["volume"], check=False)
    run_async(cleanup_amqp(names["queue"], unique))
    for prefix in (names["prefix"], names["out"], names["app"]):
        run_async(delete_topics(prefix))


def test_a_fleet_through_the_read_only_containers_and_sigterm_stops_each(
        image: str, names: dict[str, str], unique: str, tmp_path: Path) -> None:
    web_port, metrics_port = free_port(), free_port()
    common = ["--topic-prefix", names["prefix"], "--topic-partitions", "3"]
    worker_args = ["worker", *common, "--app-id", names["app"], "--output-prefix", names["out"],
                   "--store", "rocksdb://", "--web-port", str(web_port), "--web-bind", "127.0.0.1"]
    cluster.podman("volume", "create", names["volume"])
    worker = Container(image, f"pipeline-test-{unique}-worker", *worker_args, volume=names["volume"])
    bridge = Container(image, f"pipeline-test-{unique}-bridge", "bridge", *common,
                       "--amqp-queue", names["queue"], "--amqp-binding", power_fleet.binding(unique),
                       "--no-amqp-queue-durable", "--metrics-port", str(metrics_port))
    containers = (worker, bridge)

    def logs() -> str:
        return "\n".join(f"--- {c.name}\n{c.logs()[-3000:]}" for c in containers)

    for port, container in ((web_port, worker), (metrics_port, bridge)):
        eventually(lambda c=container, p=port: c.running() and ready(p), 120, f"{container.name} /readyz 200",
                   interval=1, ignore=(OSError,), detail=logs)
    wait_for_queue(names["queue"])
    assert REBUILD_WARNING not in worker.logs(), "a first start on an empty volume is no unclean stop"

    fleet = power_fleet.Fleet(unique, 40)
    fleet.start()
    time.sleep(1)
    fleet.end()
    power_fleet.check_accounted(power_fleet.operations(names["out"], len(fleet.nodes)), fleet.nodes, logs())

    for container, component in ((bridge, "bridge"), (worker, "worker")):
        grace = grace_seconds(component)
        code, took = container.sigterm(grace)
        assert code == 0 and took < grace, f"{container.name}: exit {code} after {took:.1f} s (grace {grace} s)\n{logs()}"
        # the root filesystem is read-only: a write outside the volumes would have failed loudly
        assert container.diff() == [], f"{container.name} changed its root filesystem"
        assert "Read-only file system" not in container.logs(), container.logs()[-3000:]
    tables = cluster.podman("run", "--rm", "--network", "none", "-v", f"{names['volume']}:/data", "--entrypoint", "find", image,
                            "/data", "-maxdepth", "2").stdout
    assert names["app"] in tables, f"the worker's tables are on its volume:\n{tables}"

    # the same volume again, after a clean stop: the tables are used as they are
    again = Container(image, f"pipeline-test-{unique}-worker-again", *worker_args, volume=names["volume"])
    eventually(lambda: again.running() and ready(web_port), 120, "the restarted worker /readyz 200",
               interval=1, ignore=(OSError,), detail=again.logs)
    assert REBUILD_WARNING not in again.logs(), again.logs()[-3000:]
    code, took = again.sigterm(grace_seconds("worker"))
    assert code == 0, again.logs()[-3000:]
