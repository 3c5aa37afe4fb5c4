"""The bench times only terminal events a worker can turn into an operation record: its latency
figures and the soak's lost count rest on that."""
from __future__ import annotations

from types import SimpleNamespace

from pipeline.bench.records import Workload, kafka_record


def test_every_terminal_event_the_bench_times_gets_its_operation_record() -> None:
    """A minute of the soak's workload (6,000 events at 100/s) through the worker's processor: each
    timed terminal event's message id comes back as an operation record's `end_message_id`. (Before
    the bench left Glance's upload errors untimed, two of this minute's never could: their payload
    is only a message, no image id.)"""
    from pipeline.streams.app import Metrics, Recent, WorkerSettings
    from pipeline.streams.processor import DictStore, Processor

    records: list[dict] = []
    rt = SimpleNamespace(settings=WorkerSettings(replay_guard_s=0.0), metrics=Metrics(), reporter=Recent(), ready=False)
    processor = Processor(rt, DictStore(), DictStore(),
                          sink=lambda kind, key, out, partition: records.append(out.record) if kind == "operation" else None)
    published = Workload(1000, 100, seed=0).publish_list(6000)
    timed = {p.end_key[2] for p in published if p.end_key is not None}
    for p in published:
        topic, key, value, _ = kafka_record(p.body, "notifications.")
        processor.handle_batch([(topic, 0, key, value)])

    assert len(timed) > 1500
    assert timed - {r["end_message_id"] for r in records} == set()
