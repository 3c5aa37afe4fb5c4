"""Rendering and schema validation of the Kubernetes manifests, fully offline.

Rendering uses a standalone kustomize (tests/k8s/tools.sh builds the pinned one into .stack/bin);
built-in kinds are validated against the Kubernetes JSON schemas that ship inside the
kubernetes-validate wheel, custom kinds against the openAPIV3Schema of the CRDs in .stack/k8s-crds/,
which tests/k8s/strimzi-crds.sh generates with Strimzi's own CRD generator from Maven Central.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
CRDS_DIR = Path(os.environ.get("K8S_CRDS_DIR", ROOT / ".stack" / "k8s-crds"))
# The oldest Kubernetes the manifests claim to support, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30", "1.37")
STRIMZI_GROUP = "kafka.strimzi.io"

Obj = dict[str, Any]


@functools.cache
def kustomize_command() -> list[str]:
    """The pinned standalone kustomize (built by tools.sh when Go is there and `make test` did not
    build it yet), else one on PATH, else kubectl's embedded one."""
    override = os.environ.get("KUSTOMIZE")
    if override:
        return [override, "build"]
    pinned = ROOT / ".stack" / "bin" / "kustomize"
    if not pinned.is_file() and shutil.which("go"):
        subprocess.run(["bash", str(ROOT / "tests" / "k8s" / "tools.sh")], check=False, timeout=600)
    if pinned.is_file():
        return [str(pinned), "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("no kustomize: run tests/k8s/tools.sh (builds it from the Go module proxy into .stack/bin)")


def kustomize_build(path: Path) -> str:
    result = subprocess.run([*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"kustomize build {path} failed:\n{result.stderr}")
    return result.stdout


@functools.cache
def render_text(overlay: str) -> str:
    return kustomize_build(K8S / "overlays" / overlay)


def render(overlay: str) -> list[Obj]:
    """The overlay's objects; a fresh copy each call, so a test may not spoil another's."""
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def render_path(path: Path) -> list[Obj]:
    """The objects of a kustomization anywhere (a test's overlay over one of ours)."""
    return [doc for doc in yaml.safe_load_all(kustomize_build(path)) if doc]


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]

    def containers(self) -> Iterator[tuple[Obj, Obj]]:
        """(workload, container) for every container and init container."""
        for workload in self.workloads():
            pod = workload["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield workload, container

    def settings(self) -> dict[str, str]:
        """The data of the one ConfigMap that every container takes its settings from."""
        (config_map,) = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"].startswith("pipeline-settings")]
        return config_map["data"]


# --- custom resources against their CRDs ---------------------------------------------


def _strict(schema: Any) -> Any:
    """Reject unknown fields the way the API server prunes or refuses them: every object schema
    that lists its properties gets additionalProperties: false, unless it preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if k != "properties"}
        if "properties" in schema:
            out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
            if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
                out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


# What makes the CRDs each group's custom resources are checked against (all into CRDS_DIR).
CRD_MAKERS = {
    STRIMZI_GROUP: ROOT / "tests" / "k8s" / "strimzi-crds.sh",  # Strimzi's CRD generator, Maven Central
    "monitoring.coreos.com": ROOT / "tests" / "monitoring" / "tools.sh",  # controller-gen, Go module proxy
}


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> strict JSON schema, for every version the CRDs in CRDS_DIR serve.
    `make test` makes them (tools.sh); a bare pytest run makes the missing ones here, once."""
    def load() -> dict[tuple[str, str], Any]:
        schemas: dict[tuple[str, str], Any] = {}
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    if version.get("served"):
                        schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                        schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
        return schemas

    schemas = load()
    groups = {api.split("/")[0] for api, _ in schemas}
    missing = [maker for group, maker in CRD_MAKERS.items() if group not in groups]
    for maker in missing:
        subprocess.run(["bash", str(maker)], check=False, timeout=900)
    if missing:
        schemas = load()
        groups = {api.split("/")[0] for api, _ in schemas}
    absent = sorted(set(CRD_MAKERS) - groups)
    if absent:
        pytest.fail(f"no CRDs of {absent} in {CRDS_DIR}: {', '.join(str(CRD_MAKERS[g]) for g in absent)} make them")
    return schemas


def crd_errors(obj: Obj) -> list[str]:
    """What the API server would refuse in a custom resource, by its CRD's schema."""
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        served = sorted(v for v, k in crd_schemas() if k == obj["kind"])
        return [f"{obj['apiVersion']} {obj['kind']} is not served by the CRDs (served: {served or 'none'})"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
