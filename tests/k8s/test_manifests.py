"""Every overlay renders, every object is valid against its schema, and the rules a platform team
checks before applying it hold: hardened containers, probes, resources, no literal secrets, pinned
images, disruption budgets, network policies, topics and least-privilege Kafka users."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import faust
import kubernetes_validate
import pytest

import pipeline
from pipeline import catalog, events
from pipeline.bridge.relay import catalog_topics
from pipeline.streams.topics import Topics
from tests.support.k8s import (
    KUBERNETES_VERSIONS,
    OVERLAYS,
    STRIMZI_GROUP,
    Obj,
    Rendered,
    crd_errors,
    ident,
    render,
)

# docs/contracts.md, "Kafka topics": the families every deployment relays, at the least.
DESIGN_FAMILIES = {
    "baremetal.node",
    "baremetal.port",
    "baremetal.portgroup",
    "baremetal.chassis",
    "baremetal.deploytemplate",
    "baremetal.volumeconnector",
    "baremetal.volumetarget",
    "baremetal.allocation",
    "baremetal.runbook",
    "baremetal.inspectionrule",
    "image",
    "image.member",
    "task",
}
WORKER_APP_ID = "pipeline-worker"  # faust app id: consumer group and internal topic prefix
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|_KEY$|APIKEY", re.I)


def bridge_topics(settings: dict[str, str]) -> set[str]:
    """What the bridge writes, as the bridge names it: every catalog family's relay topic and the
    dead-letter topic."""
    families = {row.family for row in catalog.ROWS}
    assert DESIGN_FAMILIES <= families, DESIGN_FAMILIES - families
    return set(catalog_topics(settings["TOPIC_PREFIX"]))


def worker_topics(settings: dict[str, str]) -> Topics:
    """What the worker reads and writes, as the worker names it."""
    return Topics.named(settings["TOPIC_PREFIX"], settings["OUTPUT_TOPIC_PREFIX"])


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are expected here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def service_selects(service: Obj, labels: dict[str, str]) -> bool:
    """A Service's selector is a plain label map, not a LabelSelector."""
    return selects({"matchLabels": service["spec"]["selector"]}, labels)


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_match_the_kubernetes_schemas(rendered: Rendered, version: str) -> None:
    failures = []
    for obj in rendered.objects:
        # custom kinds are checked against their CRDs (the prometheus-operator's in tests/monitoring)
        if obj["apiVersion"].split("/")[0] in (STRIMZI_GROUP, "monitoring.coreos.com"):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            failures.append(f"{ident(obj)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            failures.append(f"{ident(obj)}: {error.message}")
    assert not failures, f"{rendered.overlay} against Kubernetes {version}:\n" + "\n".join(failures)


def test_strimzi_kinds_match_the_crds(rendered: Rendered) -> None:
    strimzi = [o for o in rendered.objects if o["apiVersion"].split("/")[0] == STRIMZI_GROUP]
    assert {o["kind"] for o in strimzi} == {"KafkaTopic", "KafkaUser"}
    failures = [f"{ident(o)}: {e}" for o in strimzi for e in crd_errors(o)]
    # CRDs type metadata only as `object`; the API server still wants a DNS subdomain name.
    failures += [f"{ident(o)}: invalid name" for o in strimzi if not DNS_SUBDOMAIN.match(o["metadata"]["name"])]
    assert not failures, f"{rendered.overlay}:\n" + "\n".join(failures)


def test_the_crd_check_catches_mistakes() -> None:
    """The validator itself must fail on what the API server would refuse."""
    objects = render(OVERLAYS[0])
    topic = next(o for o in objects if o["kind"] == "KafkaTopic")
    user = next(o for o in objects if o["kind"] == "KafkaUser")

    topic["spec"]["partitions"] = 0
    topic["spec"]["replica"] = 3
    errors = crd_errors(topic)
    assert any("less than the minimum of 1" in e for e in errors), errors
    assert any("'replica' was unexpected" in e for e in errors), errors

    del user["spec"]["authorization"]["acls"][0]["operations"]
    user["spec"]["authorization"]["acls"][0]["operation"] = "Write"
    assert any("'operations' is a required property" in e for e in crd_errors(user))

    user["apiVersion"] = f"{STRIMZI_GROUP}/v1beta2"
    assert any("not served" in e for e in crd_errors(user))


def test_the_kubernetes_check_catches_mistakes() -> None:
    objects = render(OVERLAYS[0])
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["bogusField"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# --- containers: security, probes, resources, images --------------------------------------------


def test_every_pod_and_container_is_hardened(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        pod = pod_spec(workload)
        where = f"{rendered.overlay} {ident(workload)}"
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, where
        assert pod_security.get("runAsUser", 0) >= 10000, f"{where}: run as a high numeric UID"
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, f"{where}: no API token needed"
        assert pod.get("serviceAccountName") not in (None, "default"), where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
    for workload, container in rendered.containers():
        where = f"{rendered.overlay} {ident(workload)} container {container['name']}"
        security = container.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("privileged", False) is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not security.get("capabilities", {}).get("add"), where


def test_every_container_has_probes_on_the_health_paths(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        where = f"{rendered.overlay} {ident(workload)} container {container['name']}"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        probes = {kind: container.get(kind) for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert all(probes.values()), f"{where}: startup, liveness and readiness probes"
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        assert probes["startupProbe"]["httpGet"]["path"] == "/healthz", where
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", where
        for probe in probes.values():
            assert probe["httpGet"]["port"] in ports, f"{where}: probe port must be a named container port"
        # liveness must not kill a pod that is merely busy recovering: the startup probe covers
        # the first start, and liveness gives the shared event loop time.
        liveness = probes["livenessProbe"]
        assert liveness.get("timeoutSeconds", 1) >= 5, where
        assert liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) >= 60, where


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        where = f"{rendered.overlay} {ident(workload)} container {container['name']}"
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory", "ephemeral-storage"} <= set(resources.get(bound, {})), f"{where}: {bound}"
        # equal memory request and limit: the scheduler reserves what the pod may use, OOMs are predictable
        assert resources["requests"]["memory"] == resources["limits"]["memory"], where
        # faust heartbeats from the same event loop: throttling below one core risks rebalances
        assert cpu_millicores(resources["limits"]["cpu"]) >= 1000, where


def cpu_millicores(quantity: str | int) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def test_images_are_pinned_and_come_from_a_registry(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        image = container["image"]
        where = f"{rendered.overlay} {ident(workload)}: {image}"
        name, _, digest = image.partition("@")
        repository, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert "/" in repository and "." in repository.split("/")[0], f"{where}: name the registry"
        assert digest.startswith("sha256:") or (tag and tag != "latest"), f"{where}: pin a tag or digest"
        assert container.get("imagePullPolicy") in ("IfNotPresent", "Always"), where
        # the image's ENTRYPOINT is `pipeline`: a command here would bypass it
        assert "command" not in container, where
        assert container["args"][0] in ("bridge", "worker", "reconcile"), where


def test_no_literal_secrets(rendered: Rendered) -> None:
    assert not rendered.of_kind("Secret"), "Secrets are created by Strimzi or the platform team, never shipped"
    for config_map in rendered.of_kind("ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            if SECRET_WORDS.search(key):
                assert key.endswith("_FILE") and value.startswith("/"), f"{key}: only a path to a mounted file"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{key}: a URL with a password"
    for workload, container in rendered.containers():
        for name, item in env_of(container).items():
            if SECRET_WORDS.search(name) and not name.endswith("_FILE"):
                assert "value" not in item, f"{ident(workload)}: {name} has a literal value"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(item.get("value", ""))), name


def test_mounted_secret_files_are_the_ones_the_settings_name(rendered: Rendered) -> None:
    settings = rendered.settings()
    for workload, container in rendered.containers():
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        files = set()
        for name, mount in mounts.items():
            secret = volumes.get(name, {}).get("secret")
            if secret:
                assert mount.get("readOnly") is True, f"{ident(workload)}: {name} mounted read-only"
                files |= {f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}
        needed = {"KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CAFILE"}
        if container["args"][0] == "bridge":
            needed.add("AMQP_PASSWORD_FILE")
        for setting in needed:
            assert settings[setting] in files, f"{ident(workload)}: {setting}={settings[setting]} is not mounted"


# --- workloads ------------------------------------------------------------------------------------


def test_worker_statefulset_has_identity_storage_and_routing(rendered: Rendered) -> None:
    settings = rendered.settings()
    worker = rendered.one("StatefulSet", "pipeline-worker")
    spec = worker["spec"]
    peers = rendered.one("Service", spec["serviceName"])
    assert peers["spec"].get("clusterIP") == "None", "the governing Service must be headless"
    assert peers["spec"].get("publishNotReadyAddresses") is True, "routing must work while pods are unready"
    assert service_selects(peers, pod_labels(worker))

    (container,) = pod_spec(worker)["containers"]
    env = env_of(container)
    names = [item["name"] for item in container["env"]]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    web_host = env["WORKER_WEB_HOST"]["value"]
    assert web_host.startswith(f"$(POD_NAME).{spec['serviceName']}."), web_host
    # $(VAR) expands only from variables defined earlier in the list
    for variable in re.findall(r"\$\((\w+)\)", web_host):
        assert names.index(variable) < names.index("WORKER_WEB_HOST"), variable
    assert env["CONSUMER_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"

    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["WORKER_DATA_DIR"]["value"], "RocksDB on the volume"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert settings["WORKER_WEB_PORT"] == str(container["ports"][0]["containerPort"])
    # warm shutdown: flush, commit, close RocksDB; Kubernetes' default 30 s is too short
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 60
    assert spec["podManagementPolicy"] == "Parallel"


def test_bridge_is_a_deployment_that_drains_before_it_stops(rendered: Rendered) -> None:
    bridge = rendered.one("Deployment", "pipeline-bridge")
    assert bridge["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod_spec(bridge)["terminationGracePeriodSeconds"] >= 30
    (container,) = pod_spec(bridge)["containers"]
    assert rendered.settings()["BRIDGE_METRICS_PORT"] == str(container["ports"][0]["containerPort"])


def test_every_service_selects_pods_and_names_their_ports(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        targets = [w for w in rendered.workloads() if service_selects(service, pod_labels(w))]
        assert targets, f"{ident(service)} selects no pod"
        for port in service["spec"]["ports"]:
            for workload in targets:
                names = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{ident(service)} -> {ident(workload)}: {port['targetPort']}"


def test_every_workload_has_a_disruption_budget(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for workload in rendered.workloads():
        matching = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(workload))]
        assert len(matching) == 1, f"{rendered.overlay} {ident(workload)}: one PDB"
        # never 0: a budget that allows no eviction blocks node drains for good
        assert matching[0]["spec"].get("maxUnavailable") == 1, ident(workload)


def test_every_pod_is_isolated_by_a_network_policy(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    for workload in rendered.workloads():
        matching = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels(workload))]
        assert matching, f"{ident(workload)}: no NetworkPolicy selects its pods"
        types = {t for p in matching for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, ident(workload)
        ports = {p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        allowed = {p["port"] for pol in matching for rule in pol["spec"].get("ingress", []) for p in rule["ports"]}
        assert allowed == ports, f"{ident(workload)}: ingress only to its own ports"
        egress_ports = {p["port"] for pol in matching for rule in pol["spec"]["egress"] for p in rule["ports"]}
        bootstrap_port = int(rendered.settings()["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rpartition(":")[2])
        assert {53, bootstrap_port} <= egress_ports, ident(workload)
        for policy in matching:
            for rule in policy["spec"].get("ingress", []) + policy["spec"]["egress"]:
                assert rule.get("ports"), f"{ident(policy)}: every rule names its ports"


def test_pods_are_scraped_by_prometheus(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        ports = {str(p["containerPort"]) for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        assert annotations.get("prometheus.io/scrape") == "true", ident(workload)
        assert annotations.get("prometheus.io/port") in ports, ident(workload)
        assert annotations.get("prometheus.io/path") == "/metrics", ident(workload)


def test_everything_lands_in_one_namespace(rendered: Rendered) -> None:
    """The pods mount the Secrets Strimzi's User Operator writes next to the KafkaUsers."""
    namespaces = {o["metadata"].get("namespace") for o in rendered.objects}
    assert len(namespaces) == 1 and None not in namespaces, namespaces


# --- Kafka: topics and users ----------------------------------------------------------------------


def strimzi_cluster(rendered: Rendered) -> str:
    clusters = {
        o["metadata"]["labels"]["strimzi.io/cluster"] for o in rendered.objects if o["kind"] in ("KafkaTopic", "KafkaUser")
    }
    assert len(clusters) == 1, clusters
    return clusters.pop()


def topic_name(topic: Obj) -> str:
    return topic["spec"].get("topicName", topic["metadata"]["name"])


def test_every_topic_is_declared_with_partitions_replicas_and_config(rendered: Rendered) -> None:
    settings = rendered.settings()
    worker = worker_topics(settings)
    topics = {topic_name(t): t for t in rendered.of_kind("KafkaTopic")}
    assert set(topics) == bridge_topics(settings) | set(worker.sources) | set(worker.outputs) | {worker.deadletter}
    assert worker.outputs == ("pipeline.operations", "pipeline.node-state", "pipeline.alerts")  # docs/contracts.md
    for name, topic in topics.items():
        spec = topic["spec"]
        assert spec["partitions"] == int(settings["TOPIC_PARTITIONS"]), f"{name}: co-partitioned with faust's topics"
        assert spec["replicas"] >= int(settings["TOPIC_REPLICATION_FACTOR"]), name
        config = spec["config"]
        assert 1 <= config["min.insync.replicas"] <= spec["replicas"], name
        if spec["replicas"] > 1:
            assert config["min.insync.replicas"] < spec["replicas"], f"{name}: survive one broker down"
        if name == worker.node_state:
            assert config["cleanup.policy"] == "compact" and "retention.ms" not in config, name
        else:
            assert config["cleanup.policy"] == "delete" and int(config["retention.ms"]) > 0, name


def test_the_clients_find_the_strimzi_cluster(rendered: Rendered) -> None:
    cluster = strimzi_cluster(rendered)
    settings = rendered.settings()
    assert settings["KAFKA_BOOTSTRAP_SERVERS"].startswith(f"{cluster}-kafka-bootstrap"), settings
    for workload in rendered.workloads():
        secrets = {v["secret"]["secretName"] for v in pod_spec(workload)["volumes"] if "secret" in v}
        assert f"{cluster}-cluster-ca-cert" in secrets, ident(workload)
    for policy in rendered.of_kind("NetworkPolicy"):
        peers = [p for rule in policy["spec"]["egress"] for p in rule.get("to", [])]
        kafka = [p for p in peers if "strimzi.io/cluster" in p.get("podSelector", {}).get("matchLabels", {})]
        assert [p["podSelector"]["matchLabels"]["strimzi.io/cluster"] for p in kafka] == [cluster], ident(policy)


def acls(user: Obj) -> list[tuple[str, str, str, frozenset[str]]]:
    return [
        (
            rule["resource"]["type"],
            rule["resource"]["name"],
            rule["resource"].get("patternType", "literal"),
            frozenset(rule["operations"]),
        )
        for rule in user["spec"]["authorization"]["acls"]
    ]


def test_each_pod_authenticates_as_its_own_kafka_user(rendered: Rendered) -> None:
    users = {u["metadata"]["name"]: u for u in rendered.of_kind("KafkaUser")}
    for workload in rendered.workloads():
        (container,) = pod_spec(workload)["containers"]
        user = env_of(container)["KAFKA_SASL_USERNAME"]["value"]
        assert user in users, ident(workload)
        assert users[user]["spec"]["authentication"]["type"] == "scram-sha-512"
        secrets = {v["secret"]["secretName"] for v in pod_spec(workload)["volumes"] if "secret" in v}
        assert user in secrets, f"{ident(workload)}: mounts the Secret Strimzi creates for {user}"
    assert set(users) == {"pipeline-bridge", "pipeline-worker", "pipeline-reconciler"}


def test_kafka_users_get_what_they_need_and_no_more(rendered: Rendered) -> None:
    settings = rendered.settings()
    worker = worker_topics(settings)
    users = {u["metadata"]["name"]: acls(u) for u in rendered.of_kind("KafkaUser")}
    for name, rules in users.items():
        for kind, resource, pattern, operations in rules:
            assert kind in ("topic", "group"), f"{name}: no cluster or transactional rights"
            assert "All" not in operations and "*" not in resource, name
            if kind == "topic" and pattern == "literal":
                assert "Create" not in operations, f"{name}: Strimzi creates {resource}"
            if pattern == "prefix":
                assert resource == f"{WORKER_APP_ID}-", f"{name}: the only prefix is faust's own"
        assert len({(k, r, p) for k, r, p, _ in rules}) == len(rules), f"{name}: one rule per resource"

    expected_bridge = {("topic", t, "literal", frozenset({"Describe", "Write"})) for t in bridge_topics(settings)}
    assert set(users["pipeline-bridge"]) == expected_bridge

    expected_worker = (
        {("topic", t, "literal", frozenset({"Describe", "Read"})) for t in worker.sources}
        | {("topic", worker.deadletter, "literal", frozenset({"Describe", "Write"}))}
        # the replay guard re-reads the tail of the outputs it writes
        | {("topic", t, "literal", frozenset({"Describe", "Read", "Write"})) for t in worker.outputs}
        | {
            ("topic", f"{WORKER_APP_ID}-", "prefix", frozenset({"Create", "Describe", "Read", "Write"})),
            ("group", WORKER_APP_ID, "literal", frozenset({"Read"})),
        }
    )
    assert set(users["pipeline-worker"]) == expected_worker

    # the reconciler: the alerts in its group, the node-state table for the sweep, and its
    # observations into the relay topics of the families it asks about
    expected_reconciler = (
        {("topic", t, "literal", frozenset({"Describe", "Read"})) for t in (worker.alerts, worker.node_state)}
        | {("group", reconciler_group(), "literal", frozenset({"Read"}))}
        | {("topic", events.topic_for(f, settings["TOPIC_PREFIX"]), "literal", frozenset({"Describe", "Write"}))
           for f in catalog.OBSERVABLE}
    )
    assert set(users["pipeline-reconciler"]) == expected_reconciler


def reconciler_group() -> str:
    from pipeline.reconcile.command import SETTINGS

    return next(s.default for g in SETTINGS for s in g.settings if s.flag == "--group-id")


def test_the_worker_app_id_is_the_one_the_acls_name(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group and the changelog prefix in the ACLs are the faust app id the worker runs with."""
    from pipeline.streams.command import configure

    monkeypatch.delenv("WORKER_APP_ID", raising=False)
    parser = argparse.ArgumentParser()
    configure(parser)
    default = parser.parse_args([]).app_id
    assert rendered.settings().get("WORKER_APP_ID", default) == WORKER_APP_ID


# --- overlays -------------------------------------------------------------------------------------


def replicas(rendered: Rendered, kind: str, name: str) -> int:
    return rendered.one(kind, name)["spec"]["replicas"]


def container_resources(rendered: Rendered, kind: str, name: str) -> Obj:
    return pod_spec(rendered.one(kind, name))["containers"][0]["resources"]


def test_dev_is_one_small_replica_with_memory_tables() -> None:
    dev = Rendered("dev", render("dev"))
    assert replicas(dev, "Deployment", "pipeline-bridge") == 1
    assert replicas(dev, "StatefulSet", "pipeline-worker") == 1
    assert dev.settings()["WORKER_STORE"] == "memory://"
    for topic in dev.of_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] == 1, "a single-broker dev cluster"


def test_production_is_replicated_spread_larger_and_on_rocksdb() -> None:
    dev = Rendered("dev", render("dev"))
    prod = Rendered("production", render("production"))
    settings = prod.settings()
    assert settings["WORKER_STORE"] == "rocksdb://"
    assert replicas(prod, "Deployment", "pipeline-bridge") >= 2
    workers = replicas(prod, "StatefulSet", "pipeline-worker")
    assert 2 <= workers <= int(settings["TOPIC_PARTITIONS"]), "workers beyond the partitions sit idle"
    for workload in prod.workloads():
        anti = pod_spec(workload).get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) + [
            {"podAffinityTerm": t} for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        ]
        assert any(
            t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            and selects(t["podAffinityTerm"]["labelSelector"], pod_labels(workload))
            for t in terms
        ), f"{ident(workload)}: spread over nodes"
    for kind, name in (("Deployment", "pipeline-bridge"), ("StatefulSet", "pipeline-worker")):
        small, large = container_resources(dev, kind, name), container_resources(prod, kind, name)
        assert cpu_millicores(large["requests"]["cpu"]) > cpu_millicores(small["requests"]["cpu"]), name
        assert memory_bytes(large["requests"]["memory"]) > memory_bytes(small["requests"]["memory"]), name
    claim = prod.one("StatefulSet", "pipeline-worker")["spec"]["volumeClaimTemplates"][0]
    assert memory_bytes(claim["spec"]["resources"]["requests"]["storage"]) >= 10 * 2**30
    for topic in prod.of_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] >= 3 and topic["spec"]["config"]["min.insync.replicas"] >= 2


# --- the settings reach the code ------------------------------------------------------------------


def names_read_by_the_code() -> set[str]:
    """Environment variables the pipeline package or faust reads (a quoted literal in our sources:
    env("X"), env_int("X"), secret("X") which also reads X_FILE; faust: env_name="X")."""
    package = Path(pipeline.__file__).parent
    ours = set()
    for source in package.rglob("*.py"):
        ours |= set(re.findall(r"""["']([A-Z][A-Z0-9_]{2,})["']""", source.read_text()))
    ours |= {f"{name}_FILE" for name in ours}
    faust_settings = Path(faust.__file__).parent / "types" / "settings" / "settings.py"
    theirs = set(re.findall(r'env_name="([A-Z0-9_]+)"', faust_settings.read_text()))
    return ours | theirs


def test_every_setting_the_manifests_give_is_read_by_the_code(rendered: Rendered) -> None:
    """A misspelt variable is silently ignored by the program: check every name against the code."""
    read = names_read_by_the_code()
    given = set(rendered.settings())
    for _workload, container in rendered.containers():
        values = " ".join(str(item.get("value", "")) for item in container.get("env", []))
        expanded_only = set(re.findall(r"\$\((\w+)\)", values))  # POD_NAME, POD_NAMESPACE
        given |= set(env_of(container)) - expanded_only
    assert not given - read, f"set in k8s/ but read by nothing: {sorted(given - read)}"
