"""k8s/components/schema-registry: an overlay that adds it switches both processes to registry
framing and lets their pods reach the registry, and changes nothing else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_manifests import names_read_by_the_code

from tests.support.k8s import K8S, KUBERNETES_VERSIONS, OVERLAYS, kustomize_command, render

COMPONENT = K8S / "components" / "schema-registry"


def _with_component(overlay: str, tmp_path: Path) -> list[dict]:
    """`overlay` plus the component, as a user's overlay would add it (relative paths)."""
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(K8S / "overlays" / overlay)], "components": [rel(COMPONENT)],
    }))
    done = subprocess.run([*kustomize_command(), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _settings(objects: list[dict]) -> dict[str, str]:
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("pipeline-settings")]
    return config_map["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_component_sets_registry_framing_and_egress_only(overlay: str, tmp_path: Path) -> None:
    plain, patched = render(overlay), _with_component(overlay, tmp_path)
    before, after = _settings(plain), _settings(patched)
    assert before["AVRO_FRAMING"] == "single-object" and after["AVRO_FRAMING"] == "registry"
    assert after["SCHEMA_REGISTRY_URL"].endswith("/apis/ccompat/v7")
    keep = lambda data: {k: v for k, v in data.items() if k not in ("AVRO_FRAMING", "SCHEMA_REGISTRY_URL")}  # noqa: E731
    assert keep(after) == keep(before)
    assert not ({"AVRO_FRAMING", "SCHEMA_REGISTRY_URL"} - names_read_by_the_code())

    policies = {o["metadata"]["name"]: o for o in patched if o["kind"] == "NetworkPolicy"}
    for name in ("pipeline-bridge", "pipeline-worker"):
        last = policies[name]["spec"]["egress"][-1]
        assert last["ports"] == [{"port": 8080, "protocol": "TCP"}], name
    # the rest of the overlay is as it was (the ConfigMap's name carries its new hash)
    strip = lambda objs: sorted(yaml.safe_dump(o) for o in objs if o["kind"] not in ("ConfigMap", "NetworkPolicy")  # noqa: E731
                                and "pipeline-settings" not in yaml.safe_dump(o))
    assert strip(patched) == strip(plain)
    for obj in policies.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
