"""Static checks of the image definition. No Docker engine is available to build it here, so these
check what a build and the pods rely on: stages, base images, the user, the entrypoint, the files
it copies and what the manifests expect of it."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass

from tests.support.k8s import OVERLAYS, ROOT, Rendered, render

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM it belongs to


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "the Dockerfile ends in a line continuation"
    parsed, stage = [], -1
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        parsed.append(Instruction(keyword, arguments.strip(), stage))
    return parsed


def stages() -> list[list[Instruction]]:
    all_instructions = instructions()
    count = max(i.stage for i in all_instructions) + 1
    return [[i for i in all_instructions if i.stage == n] for n in range(count)]


def from_parts(stage: list[Instruction]) -> tuple[str, str]:
    """(image, stage name) of a stage's FROM."""
    match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", stage[0].arguments, re.I)
    assert match, stage[0].arguments
    return match.group(1), match.group(2) or ""


def last(stage: list[Instruction], keyword: str) -> Instruction | None:
    found = [i for i in stage if i.keyword == keyword]
    return found[-1] if found else None


def env_values(stage: list[Instruction]) -> dict[str, str]:
    values = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", instruction.arguments):
                values[key] = value
    return values


def test_multi_stage_build_on_a_pinned_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    names = [from_parts(s)[1] for s in all_stages]
    assert all(names), f"every stage is named: {names}"
    for stage in all_stages:
        image, _ = from_parts(stage)
        if image in names:
            continue
        assert image.startswith("python:") and "-slim" in image, image
        tag = image.split(":", 1)[1].split("@")[0]
        assert re.match(r"3\.\d+", tag) and "latest" not in tag, f"{image}: pin the Python version"
    runtime = all_stages[-1]
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert any(c.startswith(f"--from={names[0]} ") for c in copies), "the runtime copies the built venv"
    assert not any(i.keyword == "RUN" and re.search(r"\bpip\b.*\binstall\b", i.arguments) for i in runtime), (
        "no installing in the runtime stage: build tools stay in the build stage"
    )


def test_runtime_runs_as_the_non_root_user_the_pods_expect() -> None:
    runtime = stages()[-1]
    user = last(runtime, "USER")
    assert user, "the runtime stage sets USER"
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit() and int(uid) >= 10000, "a numeric UID lets the kubelet check runAsNonRoot"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    for overlay in OVERLAYS:
        for workload in Rendered(overlay, render(overlay)).workloads():
            security = workload["spec"]["template"]["spec"]["securityContext"]
            assert security["runAsUser"] == int(uid), f"{overlay} {workload['metadata']['name']}"
            assert not gid or security["runAsGroup"] == int(gid)
    index = runtime.index(user)
    assert all(i.keyword != "RUN" for i in runtime[index + 1 :]), "nothing runs as root after USER"


def test_entrypoint_is_the_pipeline_command_in_exec_form() -> None:
    runtime = stages()[-1]
    entrypoint = last(runtime, "ENTRYPOINT")
    assert entrypoint, "an ENTRYPOINT"
    # JSON (exec) form: no shell in between, so SIGTERM reaches the process (faust's warm shutdown)
    assert json.loads(entrypoint.arguments) == ["pipeline"]
    cmd = last(runtime, "CMD")
    assert cmd is None or isinstance(json.loads(cmd.arguments), list), "CMD in exec form too"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "pipeline" in scripts, "the console script the entrypoint runs"


def test_avro_schemas_and_the_data_dir_are_where_the_settings_point() -> None:
    runtime = stages()[-1]
    env = env_values(runtime)
    avro_dir = env["PIPELINE_AVRO_DIR"].rstrip("/")
    copies = [i.arguments.split() for i in runtime if i.keyword == "COPY" and not i.arguments.startswith("--from")]
    assert any(c[0].rstrip("/") == "avro" and c[-1].rstrip("/") == avro_dir for c in copies), copies
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "the root filesystem is read-only in the pods"
    assert env.get("HOME", "").startswith("/tmp"), "HOME on the writable /tmp volume"
    assert env["WORKER_DATA_DIR"] == "/data"
    ports = {int(p) for i in runtime if i.keyword == "EXPOSE" for p in i.arguments.split()}
    assert ports == {6066, 9108}, "worker web views and bridge metrics"


def test_every_copied_source_exists_and_passes_the_dockerignore() -> None:
    """What `docker build` would trip over first: a COPY of a file missing or ignored."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                verdict = not negated
        return verdict

    for instruction in instructions():
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        assert instruction.keyword == "COPY", "COPY, not ADD (no remote URLs or implicit unpacking)"
        if instruction.arguments.startswith("--from"):
            continue
        *sources, _ = instruction.arguments.split()
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {source}: missing in the repository"
            assert not ignored(path), f"COPY {source}: excluded by .dockerignore"
    for private in (".git", ".venv", "tests", ".stack", "k8s"):
        assert ignored(private), f"{private} must stay out of the build context"


def test_pip_keeps_no_cache_in_the_image() -> None:
    for instruction in instructions():
        if instruction.keyword == "RUN" and re.search(r"\bpip\b.*\binstall\b", instruction.arguments):
            assert "--no-cache-dir" in instruction.arguments, instruction.arguments
