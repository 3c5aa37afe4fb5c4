"""The processor keeps parsed states between batches; the table stays the truth: what it keeps is
what it wrote back, and it reads the table again after an assignment, a failed batch, or once it
keeps more than `WARM_STATES`."""
from __future__ import annotations

import gzip

import orjson
import pytest

from pipeline.streams import processor as processor_module
from pipeline.streams.processor import DictStore
from tests.support import replay as ref


class CountingStore(DictStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bytes] = []

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        self.reads.append(key)
        return super().get_in(partition, key)


@pytest.fixture(scope="module")
def records() -> list:
    with gzip.open(ref.HERE / "relay.jsonl.gz") as f:
        return ref.records([orjson.loads(line) for line in f])


def _processor():
    proc = ref.processor([])
    proc.resources = CountingStore()
    return proc


def _keyed(records: list) -> list:
    return [r for r in records if r[2]]


def test_kept_states_are_the_written_ones(records) -> None:
    proc = _processor()
    for i in range(0, len(records), 500):
        proc.handle_batch(records[i:i + 500])
    kept = {k: v for k, v in proc._states.items() if v is not processor_module._ABSENT}
    assert kept and kept == {k: orjson.loads(v) for k, v in proc.resources.items()}


def test_a_kept_state_is_not_read_again_until_an_assignment(records) -> None:
    proc = _processor()
    first = _keyed(records)[0]
    proc.handle_batch([first])
    assert proc.resources.reads == [first[2]]
    proc.handle_batch([first])  # a duplicate: folded from the kept state
    assert proc.resources.reads == [first[2]]
    proc.on_assigned({first[1]})
    proc.handle_batch([first])
    assert proc.resources.reads == [first[2], first[2]]


def test_a_failed_batch_drops_what_it_kept(records) -> None:
    proc = _processor()
    first = _keyed(records)[0]
    proc.handle_batch([first])

    def broken_sink(*args) -> None:
        raise RuntimeError("the producer is gone")

    proc.sink = broken_sink
    with pytest.raises(RuntimeError):
        proc.handle_batch(_keyed(records)[:50])
    assert proc._states == {}


def test_past_the_limit_everything_is_dropped(records, monkeypatch) -> None:
    monkeypatch.setattr(processor_module, "WARM_STATES", 3)
    proc = _processor()
    proc.handle_batch(_keyed(records)[:200])
    assert proc._states == {}
    proc.handle_batch(_keyed(records)[:1])
    assert len(proc._states) == 1
