"""Both overlays on a real API server (Kubernetes v1.32, tests/k8s/cluster): every object applied
server-side, custom resources after their CRDs (Strimzi's, the prometheus-operator's), into a
namespace whose Pod Security admission enforces "restricted", and all accepted without a warning;
the pods the controllers then create are admitted at that level. The production overlay's objects
are checked again as the API server returns them, defaults applied: nothing written was dropped
(unknown fields are pruned from custom resources) or changed, and the offline rules still hold."""

from __future__ import annotations

from typing import Any

import pytest

import tests.k8s.test_manifests as offline
from tests.support.cluster import Cluster
from tests.support.eventually import eventually
from tests.support.k8s import OVERLAYS, Obj, Rendered, ident, render

pytestmark = pytest.mark.integration

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
