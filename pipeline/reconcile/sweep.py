"""The drift sweep, as Vitrage re-read every service on a timer: every ``--sweep-interval`` it pages
through Ironic's nodes (``GET /v1/nodes?fields=...&limit=&marker=``, ``--sweep-pages-per-second`` at
most), compares each with the node-state table and asks about every node that differs, so a lost
``power_state_corrected`` or an intermediate ``provision_set.success`` heals too.

The table is the compacted node-state topic, read from its start into memory (a node's latest
record; a tombstone removes it) and kept up to date between sweeps; each sweep first reads it to the
end offsets of that moment.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .. import codec, observed
from ..config import ConfigError
from .api import Failed
from .jobs import Job
from .metrics import DRIFT, SWEEPS

if TYPE_CHECKING:
    from .service import Reconciler

__all__ = ["NodeStates", "sweep_forever"]

log = logging.getLogger("pipeline.reconcile")


class NodeStates:
    """The node-state table, read from the compacted topic."""

    def __init__(self, topic: str, client: dict) -> None:
        self.topic = topic
        self.client = client
        self.records: dict[str, dict] = {}
        self.consumer = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.client)
        await admin.start()
        try:
            # only a topic that exists is described: a metadata request naming a missing one makes a
            # broker with auto.create.topics.enable create it, not compacted, with its own partitions
            present = self.topic in await admin.list_topics()
            described = await admin.describe_topics([self.topic]) if present else []
        finally:
            await admin.close()
        partitions = [p["partition"] for d in described if d.get("error_code", 0) == 0 for p in d.get("partitions", ())]
        if not partitions:
            raise ConfigError(f"the node-state topic {self.topic} does not exist (is a worker running with this "
                               "--output-prefix?)")
        self.consumer = consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                                    **self.client)
        await consumer.start()
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()

    async def catch_up(self) -> None:
        """Read to the end offsets of now."""
        assert self.consumer is not None
        consumer = self.consumer
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                return
            batch = await consumer.getmany(*behind, timeout_ms=500, max_records=5000)
            for records in batch.values():
                for rec in records:
                    key = rec.key.decode() if rec.key else None
                    if key is None:
                        continue
                    if rec.value is None:
                        self.records.pop(key, None)
                        continue
                    try:
                        self.records[key] = codec.decode_value(rec.value)
                    except codec.CodecError as exc:
                        log.warning("node-state record of %s we cannot read (%s)", key, exc.reason)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def sweep_once(rc: Reconciler, table: NodeStates) -> tuple[int, int] | None:
    """One sweep: (nodes that differed, nodes Ironic listed), or None when the API failed on the way."""
    await table.catch_up()
    drifted, seen, marker, pages = 0, 0, None, 0
    pause = 1.0 / rc.s.sweep_pages_per_s if rc.s.sweep_pages_per_s > 0 else 0.0
    while True:
        try:
            async with rc.limit:
                page, marker = await asyncio.to_thread(rc.api.nodes_page, marker, rc.s.sweep_page_size)
        except Failed as exc:
            log.warning("sweep stopped after %d pages: baremetal %s (%s)", pages, exc.cause, exc.detail)
            return None
        pages += 1
        seen += len(page)
        now = time.time()
        for node in page:
            uuid = str(node["uuid"])
            if observed.drift(table.records.get(uuid), node):
                drifted += 1
                rc.add(f"sweep:{uuid}", Job(about="sweep", family="baremetal.node", resource=uuid, operation=None,
                                           started_us=None, give_up_at=now, due=now))
        if marker is None:
            return drifted, seen
        await asyncio.sleep(pause)


async def sweep_forever(rc: Reconciler) -> None:

    table = NodeStates(rc.s.node_state_topic, rc.s.client)
    try:
        while True:  # the workers create the topic: a reconciler started first waits for it
            try:
                await table.start()
                break
            except ConfigError as exc:
                if rc.s.once:
                    raise
                log.warning("no sweep yet: %s; trying again in %g s", exc, rc.s.sweep_interval_s)
                await table.stop()
                try:
                    await asyncio.wait_for(rc.stop.wait(), rc.s.sweep_interval_s)
                    return
                except TimeoutError:
                    pass
        while not rc.stop.is_set():
            started = time.monotonic()
            swept = await sweep_once(rc, table)
            if swept is None:
                SWEEPS.labels("failed").inc()
                rc.failures += 1
            else:
                SWEEPS.labels("done").inc()
                DRIFT.set(swept[0])
                log.info("sweep: %d of Ironic's %d nodes differ from the node-state table (%.1f s)", *swept,
                         time.monotonic() - started)
            if rc.s.once:
                return
            try:
                await asyncio.wait_for(rc.stop.wait(), rc.s.sweep_interval_s)
            except TimeoutError:
                pass
    finally:
        await table.stop()
