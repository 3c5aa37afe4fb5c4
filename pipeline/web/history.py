"""Reloading a partition's recent operations and alerts from the output topics when it is assigned.

The agents publish each operation and alert on the partition number of the event that caused it, so
partition p of `pipeline.operations` and `pipeline.alerts` holds exactly the history of source
partition p. When p arrives on this worker (a start, a restart, a rebalance), the last `window_s` of
those two partitions (by Kafka timestamp, at most `max_records` each) feeds p's duration sketch and
recent alerts; a partition that leaves is forgotten. So /api/operations/stats covers its whole window
right after a restart, and a fleet-wide merge never counts an operation on two workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline import codec
from pipeline.web.observe import Observations

log = logging.getLogger("pipeline.web")

DEFAULT_MAX_RECORDS = 200_000


# what the duration sketches read of an operation record (Observations._sketch_operation): a
# restart reloads up to a quarter of an hour of them at once (30,000 at 100 events/s), decoded
# whole 1.4 KB each, these 0.6 KB; the worker's RSS kept the peak after they were dropped
SKETCHED = ("op_id", "operation", "duration_ms", "ended_at", "outcome", "reconciled")


def sketched(record: dict) -> dict:
    return {name: record.get(name) for name in SKETCHED}


async def read_tail(bootstrap: list[str], topic: str, partition: int, since_ms: int, max_records: int,
                    keep: Callable[[dict], dict] | None = None, **client: Any) -> list[dict]:
    """Records of one partition with a Kafka timestamp from `since_ms` on, at most the last
    `max_records`; with `keep`, what it keeps of each."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client)
    await consumer.start()
    records: list[dict] = []
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp])).get(tp, 0)
        if not end:
            return records
        found = await consumer.offsets_for_times({tp: since_ms})
        start = found[tp].offset if found.get(tp) else end
        start = max(start, end - max_records)
        if start >= end:
            return records
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=2000)
            if not batch:
                break
            for message in batch.get(tp, ()):
                if message.offset >= end:
                    break
                try:
                    record = codec.decode_value(message.value)
                    records.append(keep(record) if keep is not None else record)
                except (codec.CodecError, ValueError):
                    continue  # not ours to judge here; the topic's consumers see it
            await asyncio.sleep(0)  # the agents share this loop
    finally:
        await consumer.stop()
    return records


class HistoryLoader:
    def __init__(self, observations: Observations, bootstrap: list[str], operations_topic: str, alerts_topic: str,
                 source_topics: Iterable[str], max_records: int = DEFAULT_MAX_RECORDS, **client: Any) -> None:
        self.observations = observations
        self.bootstrap = bootstrap
        self.operations_topic = operations_topic
        self.alerts_topic = alerts_topic
        self.source_topics = frozenset(source_topics)
        self.max_records = max_records
        self.client = client
        self.tasks: dict[int, asyncio.Task] = {}
        self.held: set[int] = set()

    def on_assigned(self, assigned: Iterable[Any]) -> None:
        """faust rebalances eagerly and hands the whole new assignment: keep what stays, drop what left,
        load what arrived."""
        now = {tp.partition for tp in assigned if tp.topic in self.source_topics}
        gone = self.held - now
        for p in gone:
            task = self.tasks.pop(p, None)
            if task is not None:
                task.cancel()
        self.observations.forget(gone)
        arrived = now - self.held
        self.held = now
        for p in sorted(arrived):
            self.observations.start_loading(p)
            self.tasks[p] = asyncio.ensure_future(self._load(p))

    async def _load(self, partition: int) -> None:
        since_ms = int((time.time() - self.observations.window_s - 60) * 1000)
        try:
            operations, alerts = await asyncio.gather(
                read_tail(self.bootstrap, self.operations_topic, partition, since_ms, self.max_records,
                          keep=sketched, **self.client),
                read_tail(self.bootstrap, self.alerts_topic, partition, since_ms,
                          self.observations.recent_alerts_per_partition, **self.client),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - history only completes the figures; say so and go on
            log.warning("partition %d: recent operations and alerts not reloaded (%s)", partition, exc)
            self.observations.loading.pop(partition, None)
        else:
            if self.tasks.get(partition) is asyncio.current_task():
                self.observations.loaded(partition, operations, alerts)
                log.info("partition %d: reloaded %d operations and %d alerts", partition, len(operations), len(alerts))
        finally:
            if self.tasks.get(partition) is asyncio.current_task():
                del self.tasks[partition]
