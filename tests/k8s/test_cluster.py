"""Both overlays on a real Kubernetes v1.32 (tests/k8s/cluster, started once for this module and
removed after it), and the dev overlay's pods on its node, with the image `make image` built and
the local Kafka and RabbitMQ.

API server: every object applied server-side, custom resources after their CRDs (Strimzi's, the
prometheus-operator's), into a namespace whose Pod Security admission enforces "restricted", and
all accepted without a warning; the pods the controllers then create are admitted at that level.
The production overlay's objects are checked again as the API server returns them, defaults
applied: nothing written was dropped (unknown fields are pruned from custom resources) or changed,
and the offline rules still hold.

Node: a test overlay on top of k8s/overlays/dev changes only what one node without Strimzi needs:
- host networking: the brokers listen on 127.0.0.1 (without kube-proxy and a DNS server, Service
  IPs and names would not work anyway), so the pods' ports are free ports of this machine, and
  the bridge's rolling update stops the old pod before the new one binds its port;
- PLAINTEXT to the local Kafka, guest on the local RabbitMQ, names private to the test (queue,
  topics, consumer group), the bridge creating its topics (no Topic Operator here);
- stand-ins for the Secrets Strimzi and the platform team would create;
- RocksDB tables (the production overlay's store) on a local PersistentVolume of the node, made
  root-owned as a provisioner makes it: the pods' fsGroup must make it theirs.
Host networking is not allowed at Pod Security "restricted" or "baseline", so that namespace
enforces "privileged" and warns at "restricted": the test checks that host networking is all the
warnings name (the overlays as shipped are applied under "restricted" above).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.k8s.test_manifests as offline
from tests.support import cluster, power_fleet
from tests.support.bridge import cleanup_amqp, delete_topics
from tests.support.bridge import run as run_async
from tests.support.cluster import Cluster
from tests.support.eventually import eventually
from tests.support.k8s import K8S, OVERLAYS, Obj, Rendered, ident, render, render_path
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

# --- API server ------------------------------------------------------------------------------------

# The offline rules that read fields an API server might default, prune or rewrite.
RULES_ON_SERVED_OBJECTS = (
    offline.test_every_pod_and_container_is_hardened,
    offline.test_every_container_has_probes_on_the_health_paths,
    offline.test_every_container_has_requests_and_limits,
    offline.test_images_are_pinned_and_come_from_a_registry,
    offline.test_no_literal_secrets,
    offline.test_mounted_secret_files_are_the_ones_the_settings_name,
    offline.test_worker_statefulset_has_identity_storage_and_routing,
    offline.test_bridge_is_a_deployment_that_drains_before_it_stops,
    offline.test_every_service_selects_pods_and_names_their_ports,
    offline.test_every_workload_has_a_disruption_budget,
    offline.test_every_pod_is_isolated_by_a_network_policy,
    offline.test_pods_are_scraped_by_prometheus,
    offline.test_every_topic_is_declared_with_partitions_replicas_and_config,
    offline.test_the_clients_find_the_strimzi_cluster,
)


def into(objects: list[Obj], namespace: str) -> list[Obj]:
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def quantity(value: Any) -> Any:
    """A resource quantity as a number of base units, so "1" and "1000m" compare equal."""
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for suffix, factor in sorted(suffixes.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    try:
        return float(text)
    except ValueError:
        return value


def drift(written: Any, served: Any, path: str = "") -> list[str]:
    """Where the served object lost or changed what was written (what the server added is fine)."""
    if isinstance(written, dict):
        if not isinstance(served, dict):
            return [f"{path}: {served!r} for an object"]
        return [d for key, value in written.items()
                for d in (drift(value, served[key], f"{path}.{key}") if key in served else [f"{path}.{key}: dropped"])]
    if isinstance(written, list):
        if not isinstance(served, list) or len(served) != len(written):
            return [f"{path}: {served!r} for {written!r}"]
        return [d for i, (w, s) in enumerate(zip(written, served, strict=True)) for d in drift(w, s, f"{path}[{i}]")]
    if written == served or ("resources" in path and quantity(written) == quantity(served)):
        return []
    return [f"{path}: {served!r} for {written!r}"]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


def served_objects(k8s: Cluster, objects: list[Obj], namespace: str) -> list[Obj]:
    resources = {(o["apiVersion"], o["kind"]) for o in objects}
    served: list[Obj] = []
    for api_version, kind in sorted(resources):
        group = api_version.split("/")[0] if "/" in api_version else ""
        resource = f"{kind.lower()}.{group}" if group else kind.lower()
        served += k8s.get(resource, namespace=namespace)["items"]
    return served


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_accepted_into_a_restricted_namespace(k8s: Cluster, overlay: str, unique: str) -> None:
    namespace = f"apply-{overlay}-{unique}"
    k8s.namespace(namespace, pod_security="restricted")
    try:
        objects = into(render(overlay), namespace)
        dry = k8s.apply(objects, "--dry-run=server")
        assert dry.returncode == 0, f"{overlay}: the API server refused (dry run):\n{dry.stderr}"
        applied = k8s.apply(objects)
        assert applied.returncode == 0, f"{overlay}: the API server refused:\n{applied.stderr}"
        assert not warnings(applied.stderr), f"{overlay}: warnings (Pod Security warns at restricted):\n{applied.stderr}"
        served = {ident(o): o for o in served_objects(k8s, objects, namespace)}
        missing = [ident(o) for o in objects if ident(o) not in served]
        assert not missing, f"{overlay}: applied but not served: {missing}"
        drifted = {ident(o): d for o in objects if (d := drift(o, served[ident(o)]))}
        assert not drifted, f"{overlay}: the API server dropped or changed what was written:\n{drifted}"

        # the pods the controllers create from the templates pass Pod Security "restricted"
        rendered = Rendered(overlay, objects)
        replicas = sum(w["spec"].get("replicas", 1) for w in rendered.workloads())

        def pods_created() -> bool:
            events = k8s.get("events", namespace=namespace)["items"]
            refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
            assert not refused, f"{overlay}: the controllers' pods were refused:\n" + "\n".join(refused)
            return len(k8s.get("pods", namespace=namespace)["items"]) == replicas

        eventually(pods_created, 90, f"{overlay}: the controllers' {replicas} pods admitted", interval=1,
                   detail=lambda: k8s.describe(namespace))
        if overlay == "production":
            as_served = Rendered("production as served", [served[ident(o)] for o in objects])
            for rule in RULES_ON_SERVED_OBJECTS:
                rule(as_served)
    finally:
        k8s.delete_namespace(namespace)


def test_the_api_server_refuses_what_the_offline_checks_refuse(k8s: Cluster, unique: str) -> None:
    """The check above can fail: a misspelt field, a string for a KafkaTopic's partitions and a
    privileged container are refused here as the offline checks refuse them."""
    namespace = f"refuse-{unique}"
    k8s.namespace(namespace, pod_security="restricted")
    try:
        objects = into(render("dev"), namespace)
        topic = next(o for o in objects if o["kind"] == "KafkaTopic")
        topic["spec"]["partitions"] = "six"
        refused = k8s.apply([topic])
        assert refused.returncode != 0 and "partitions" in refused.stderr, refused.stderr
        bridge = next(o for o in objects if o["kind"] == "Deployment")
        bridge["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = True
        refused = k8s.apply([bridge], "--dry-run=server")
        assert refused.returncode != 0 and "privilegd" in refused.stderr, refused.stderr
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged", "namespace": namespace},
               "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}}
        refused = k8s.apply([pod])
        assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    finally:
        k8s.delete_namespace(namespace)


# --- node ------------------------------------------------------------------------------------------


REBUILD_WARNING = "did not stop cleanly"
HOST_NETWORK_ONLY = re.compile(
    r'^Warning: would violate PodSecurity "restricted:latest": host namespaces \(hostNetwork=true\)'
    r'(, hostPort \(container "\w+" uses hostPort \d+\))?$')


@dataclass(frozen=True)
class Deployed:
    k8s: Cluster
    namespace: str
    unique: str
    output_prefix: str
    volume: Path  # the worker's PersistentVolume, a directory of this machine
    first_worker_log: str  # the worker's log when it first became ready, on an empty volume

    def databases(self) -> dict[str, str]:
        """The worker's RocksDB databases on its volume: path -> the id RocksDB gave it when it was
        made (its IDENTITY file), which a database rebuilt from the changelog would not have."""
        return {str(p.parent.relative_to(self.volume)): p.read_text() for p in self.volume.rglob("IDENTITY")}

    def pod(self, component: str) -> dict:
        pods = self.k8s.get("pods", namespace=self.namespace)["items"]
        mine = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == component
                and not p["metadata"].get("deletionTimestamp")]
        assert len(mine) == 1, [p["metadata"]["name"] for p in mine]
        return mine[0]

    def wait_ready(self, timeout: float = 300) -> None:
        for kind, name, _ in WORKLOADS:
            try:
                self.k8s.wait_ready(kind, name, self.namespace, timeout)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.detail()}") from None

    def detail(self) -> str:
        logs = ""
        for *_, component in WORKLOADS:
            try:
                name = self.pod(component)["metadata"]["name"]
            except AssertionError:
                continue
            logs += f"--- {name}\n{self.k8s.logs(name, self.namespace)[-2500:]}\n"
        return f"{self.k8s.describe(self.namespace)}\n{logs}"


# every workload of the dev overlay: (kind, name, component); the test overlay patches each
WORKLOADS = (("statefulset", "pipeline-worker", "worker"), ("deployment", "pipeline-bridge", "bridge"),
             ("deployment", "pipeline-reconciler", "reconciler"))


def test_the_node_test_runs_every_workload_of_the_dev_overlay() -> None:
    rendered = {(w["kind"].lower(), w["metadata"]["name"]) for w in Rendered("dev", render("dev")).workloads()}
    assert rendered == {(kind, name) for kind, name, _ in WORKLOADS}, "a new workload: add it to the node test"


def write_test_overlay(tmp_path: Path, namespace: str, unique: str, volume: Path) -> Path:
    """kustomization.yaml of the test overlay over k8s/overlays/dev (module docstring)."""
    web_port, metrics_port, reconcile_port = free_port(), free_port(), free_port()
    # the OpenStack APIs the reconciler asks: a port where nothing listens (an outage), no Keystone
    closed = free_port()
    clouds = {"clouds": {"openstack": {"auth_type": "none",
                                       "baremetal_endpoint_override": f"http://127.0.0.1:{closed}/",
                                       "image_endpoint_override": f"http://127.0.0.1:{closed}/"}}}
    literals = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "AMQP_URL": "amqp://guest@127.0.0.1:5672/", "AMQP_QUEUE": f"node-{unique}",
        "AMQP_BINDINGS": power_fleet.binding(unique),
        "TOPIC_PREFIX": f"node{unique}.notifications.", "OUTPUT_TOPIC_PREFIX": f"node{unique}.pipeline.",
        "WORKER_APP_ID": f"node-{unique}", "BRIDGE_PRECREATE_TOPICS": "true", "WORKER_STORE": "rocksdb://",
        "WORKER_WEB_PORT": str(web_port), "BRIDGE_METRICS_PORT": str(metrics_port),
        "RECONCILE_GROUP_ID": f"node-{unique}-reconcile",
    }

    def host_network(kind: str, name: str, port: int, *extra: dict) -> dict:
        ops = [{"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
               {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
               {"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort", "value": port},
               *extra]
        return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(ops)}

    volume_claim = "data-pipeline-worker-0"
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-data"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                   "claimRef": {"namespace": namespace, "name": volume_claim},
                   "local": {"path": str(volume)},
                   "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                       {"key": "kubernetes.io/hostname", "operator": "In", "values": ["pipeline-k8s-node"]}]}]}}}}
    (tmp_path / "volume.yaml").write_text(yaml.safe_dump(pv))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        # kustomize takes only relative paths
        "resources": [os.path.relpath(K8S / "overlays" / "dev", tmp_path), "volume.yaml"],
        "images": [{"name": "registry.example.com/openstack/openstack-notification-pipeline",
                    "newName": cluster.image().rsplit(":", 1)[0], "newTag": cluster.image().rsplit(":", 1)[1]}],
        "configMapGenerator": [{"name": "pipeline-settings", "behavior": "merge",
                                "literals": [f"{k}={v}" for k, v in literals.items()]}],
        "secretGenerator": [
            {"name": "pipeline-amqp", "literals": ["password=guest"]},
            {"name": "pipeline-bridge", "literals": ["password=unused-with-plaintext"]},
            {"name": "pipeline-worker", "literals": ["password=unused-with-plaintext"]},
            {"name": "pipeline-reconciler", "literals": ["password=unused-with-plaintext"]},
            {"name": "my-cluster-cluster-ca-cert", "literals": ["ca.crt=unused-with-plaintext"]},
            {"name": "pipeline-openstack", "literals": [f"clouds.yaml={yaml.safe_dump(clouds)}"]},
        ],
        "generatorOptions": {"disableNameSuffixHash": True},
        "patches": [
            host_network("Deployment", "pipeline-bridge", metrics_port,
                         {"op": "replace", "path": "/spec/strategy/rollingUpdate",
                          "value": {"maxSurge": 0, "maxUnavailable": 1}}),
            host_network("StatefulSet", "pipeline-worker", web_port),
            host_network("Deployment", "pipeline-reconciler", reconcile_port),
            # its port is set in the container's env, not in the settings
            {"target": {"kind": "Deployment", "name": "pipeline-reconciler"}, "patch": yaml.safe_dump({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pipeline-reconciler"},
                "spec": {"template": {"spec": {"containers": [{"name": "reconciler", "env": [
                    {"name": "RECONCILE_METRICS_PORT", "value": str(reconcile_port)}]}]}}}})},
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return tmp_path


@pytest.fixture(scope="module")
def deployed(k8s: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    unique = uuid.uuid4().hex[:10]
    namespace = f"node-{unique}"
    volume = cluster.STATE_DIR / "volumes" / namespace
    volume.mkdir(parents=True, mode=0o755)  # root's, as a provisioner leaves it
    k8s.namespace(namespace, pod_security="privileged")
    here = Deployed(k8s, namespace, unique, f"node{unique}.pipeline.", volume, first_worker_log="")
    try:
        objects = render_path(write_test_overlay(tmp_path_factory.mktemp("overlay"), namespace, unique, volume))
        applied = k8s.apply(objects)
        assert applied.returncode == 0, applied.stderr
        strays = [w for w in applied.stderr.splitlines() if w.startswith("Warning:") and not HOST_NETWORK_ONLY.match(w)]
        assert not strays, "Pod Security findings besides the test's host networking:\n" + "\n".join(strays)
        here.wait_ready()
        log = k8s.logs(here.pod("worker")["metadata"]["name"], namespace)
        yield dataclasses.replace(here, first_worker_log=log)
    finally:
        k8s.kubectl("delete", "namespace", namespace, "--timeout=180s", check=False, timeout=240)
        k8s.kubectl("delete", "persistentvolume", f"{namespace}-data", "--ignore-not-found", check=False)
        shutil.rmtree(volume, ignore_errors=True)
        run_async(cleanup_amqp(f"node-{unique}", unique))
        for prefix in (f"node{unique}.", f"node-{unique}"):
            run_async(delete_topics(prefix))


def test_a_first_start_on_an_empty_volume_is_not_taken_for_an_unclean_stop(deployed: Deployed) -> None:
    assert REBUILD_WARNING not in deployed.first_worker_log, deployed.first_worker_log[-3000:]


def test_the_pods_are_ready_by_their_own_probes_and_a_fleet_goes_through(deployed: Deployed) -> None:
    for *_, component in WORKLOADS:
        pod = deployed.pod(component)
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["Ready"] == "True", pod["status"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, f"{component} restarted:\n{deployed.detail()}"
    for *_, component in WORKLOADS:
        log = deployed.k8s.logs(deployed.pod(component)["metadata"]["name"], deployed.namespace)
        for trouble in ("Traceback", "Read-only file system", "Permission denied"):
            assert trouble not in log, f"{component}: {trouble}\n{log[-3000:]}"
    fleet = power_fleet.Fleet(deployed.unique, 60)
    fleet.start()
    time.sleep(1)
    fleet.end()
    by_node = power_fleet.operations(deployed.output_prefix, len(fleet.nodes))
    power_fleet.check_accounted(by_node, fleet.nodes, deployed.detail(), exclusive=False)


def test_the_worker_pod_is_replaced_from_its_kept_volume(deployed: Deployed) -> None:
    """Each node's start goes in before the worker pod is deleted, its end after the replacement is
    ready: the operations pair only if the tables came back, and they come from the volume (the
    replacement does not rebuild them from the changelogs)."""
    fleet = power_fleet.Fleet(deployed.unique, 40)
    fleet.start()
    time.sleep(5)  # into the worker's tables (the operations table's start rows)
    old = deployed.pod("worker")
    databases = deployed.databases()
    assert databases, f"no RocksDB tables on the worker's volume {deployed.volume}"
    grace = old["spec"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    deployed.k8s.kubectl("delete", "pod", old["metadata"]["name"], "-n", deployed.namespace, "--wait=true",
                         f"--timeout={grace + 30}s", timeout=grace + 60)
    stopped_in = time.monotonic() - started
    assert stopped_in < grace, f"the worker took {stopped_in:.0f} s of its {grace} s grace to stop"
    deployed.wait_ready()
    new = deployed.pod("worker")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["spec"]["volumes"][0] == old["spec"]["volumes"][0], "the same claim"
    log = deployed.k8s.logs(new["metadata"]["name"], deployed.namespace)
    assert REBUILD_WARNING not in log, f"the replacement rebuilt its tables:\n{log[-3000:]}"
    kept = deployed.databases()
    assert {path: kept.get(path) for path in databases} == databases, "the replacement has the same databases"
    fleet.end()
    by_node = power_fleet.operations(deployed.output_prefix, len(fleet.nodes) + 60, timeout=150)
    power_fleet.check_accounted(by_node, fleet.nodes, deployed.detail(), exclusive=False)


def test_the_bridge_restarts_while_traffic_flows_and_nothing_is_lost(deployed: Deployed) -> None:
    fleet = power_fleet.Fleet(deployed.unique, 120)
    old = deployed.pod("bridge")

    def publish() -> None:  # the fleet's starts and ends spread over the restart
        for i in range(0, len(fleet.nodes), 10):
            batch = fleet.nodes[i:i + 10]
            fleet.start(batch)
            time.sleep(0.5)
            fleet.end(batch)
            time.sleep(0.5)

    publisher = threading.Thread(target=publish)
    publisher.start()
    time.sleep(2)
    deployed.k8s.kubectl("rollout", "restart", "deployment/pipeline-bridge", "-n", deployed.namespace)
    deployed.wait_ready()
    publisher.join(120)
    assert not publisher.is_alive()
    assert deployed.pod("bridge")["metadata"]["uid"] != old["metadata"]["uid"], "the bridge was restarted"
    by_node = power_fleet.operations(deployed.output_prefix, len(fleet.nodes) + 100, timeout=150)
    power_fleet.check_accounted(by_node, fleet.nodes, deployed.detail(), exclusive=False)
