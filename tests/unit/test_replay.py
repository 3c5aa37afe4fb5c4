"""Acceptance: the worker's body, replayed over a recorded relay stream, publishes exactly what the
per-event worker published for it (tests/fixtures/replay, made by tests/support/replay.py at commit
0f81edf): the same records in the same order, byte for byte, the same final tables and the same
reporting-hook calls."""
from __future__ import annotations

import gzip

import orjson
import pytest

from tests.support import replay as ref

REPLAY = ref.HERE


def _load(name: str) -> list[dict]:
    with gzip.open(REPLAY / name) as f:
        return [orjson.loads(line) for line in f]


def _outputs(rows: list[dict]) -> list[dict]:
    return [row for row in rows if "topic" in row]


@pytest.fixture(scope="module")
def relay() -> list[dict]:
    return _load("relay.jsonl.gz")


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    rows = _load("reference.jsonl.gz")
    return ref.by_topic(_outputs(rows)) + [row for row in rows if "topic" not in row]


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 100_000])
def test_batches_publish_what_the_per_event_worker_published(relay, reference, batch_size) -> None:
    got = ref.replay(relay, batch_size)
    assert len(_outputs(got)) == len(_outputs(reference)) == 4987
    assert len(got) == len(reference)
    for i, (a, b) in enumerate(zip(got, reference)):
        assert a == b, f"row {i} differs"


def test_the_comparison_can_fail(relay, reference) -> None:
    """A replay missing one record differs from the reference (the test above is not vacuous)."""
    got = ref.replay(relay[:1] + relay[2:], 1000)
    assert got != reference
