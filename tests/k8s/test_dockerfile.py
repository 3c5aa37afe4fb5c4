"""What only the Dockerfile's text shows: its stages and pinned base, the build context it copies
from, pip's cache in the build stage. The image itself is built and run by test_image.py (its
user, entrypoint, settings and files, as the pods run it)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from tests.support.k8s import ROOT

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
