"""Acceptance: the worker's body, replayed over a recorded relay stream, publishes exactly what the
per-event worker published for it (tests/fixtures/replay, made by tests/support/replay.py at commit
0f81edf): the same records in the same order, byte for byte, the same final tables and the same
reporting-hook calls."""
from __future__ import annotations

import base64
import gzip
import io
from pathlib import Path

import fastavro
import orjson
import pytest

from pipeline import codec
from tests.support import replay as ref

REPLAY = ref.HERE


def _load(name: str) -> list[dict]:
    with gzip.open(REPLAY / name) as f:
        return [orjson.loads(line) for line in f]


def _outputs(rows: list[dict]) -> list[dict]:
    return [row for row in rows if "topic" in row]


# Headers added to the contract since the reference was recorded (registry framing: output records
# say their framing). Everything else, the id header included, must be byte for byte the reference's.
ADDED_HEADERS = {"content-type"}


def _without_added_headers(row: dict) -> dict:
    if "headers" not in row:
        return row
    return {**row, "headers": [h for h in row["headers"] if h[0] not in ADDED_HEADERS]}


RELEASED = Path(__file__).resolve().parents[1] / "fixtures" / "avro_released" / "0.1.0"


SCHEMA_OF = {"pipeline.operations": "operation", "pipeline.node-state": "node_state", "pipeline.alerts": "alert"}


def _evolved(row: dict) -> dict:
    """A reference output written with a released schema that has changed since: its value as the
    current schema writes the same record (added fields at their defaults)."""
    name = SCHEMA_OF.get(row["topic"])
    value = base64.b64decode(row["value"]) if name else b""
    if value[:2] != codec.MAGIC or codec.schema(name).fingerprint == value[2:codec.HEADER_LEN]:
        return row
    writer = codec.parse_writer((RELEASED / f"{name}.avsc").read_text(), "released")
    assert writer.fingerprint == value[2:codec.HEADER_LEN], f"{row['topic']}: neither the current nor the released schema"
    record = fastavro.schemaless_reader(io.BytesIO(value[codec.HEADER_LEN:]), writer.parsed, codec.schema(name).parsed)
    return {**row, "value": base64.b64encode(codec.encode(name, record)).decode()}


@pytest.fixture(scope="module")
def relay() -> list[dict]:
    return _load("relay.jsonl.gz")


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    rows = _load("reference.jsonl.gz")
    return [_evolved(row) for row in ref.by_topic(_outputs(rows))] + [row for row in rows if "topic" not in row]


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 100_000])
def test_batches_publish_what_the_per_event_worker_published(relay, reference, batch_size) -> None:
    got = [_without_added_headers(row) for row in ref.replay(relay, batch_size)]
    assert len(_outputs(got)) == len(_outputs(reference)) == 4987
    assert len(got) == len(reference)
    for i, (a, b) in enumerate(zip(got, reference)):
        assert a == b, f"row {i} differs"


def test_the_comparison_can_fail(relay, reference) -> None:
    """A replay missing one record differs from the reference (the test above is not vacuous)."""
    got = ref.replay(relay[:1] + relay[2:], 1000)
    assert got != reference
