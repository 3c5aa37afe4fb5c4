"""The topics oslo.messaging's Kafka driver writes (`<topic>.<priority>`), read in a consumer group."""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from pipeline import wire
from pipeline.backoff import Backoff

from .. import metrics
from ..sink import _one_line
from .base import Delivery, InOrder

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("pipeline.bridge")

OSLO_PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def oslo_topic_pattern(topics: tuple[str, ...]) -> str:
    """`<topic>.<priority>`, and `<topic>.<priority>.<vhost>` as the driver writes with a vhost."""
    names = "|".join(re.escape(t) for t in topics)
    return rf"^(?:{names})\.(?:{'|'.join(OSLO_PRIORITIES)})(?:\.[^.]+)?$"


@dataclass(frozen=True, slots=True)
class OsloKafkaSettings:
    bootstrap_servers: list[str]
    topics: tuple[str, ...]
    group: str = "kafka-bridge"
    commit_interval_s: float = 1.0
    max_body_bytes: int = wire.MAX_BODY_BYTES
    security: dict = field(default_factory=dict)  # TLS/SASL arguments of config.kafka_client_kwargs


class OsloKafkaSource:
    """Consumes oslo's notification topics in a consumer group; commits an offset only once every
    record before it was relayed and acknowledged (enable_auto_commit off)."""

    def __init__(self, settings: OsloKafkaSettings) -> None:
        self.settings = settings
        self.description = f"oslo kafka topics {','.join(settings.topics)} group {settings.group}"
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._windows: dict[TopicPartition, InOrder] = {}
        self._committable: dict[TopicPartition, int] = {}  # the next offset to commit

    def stop(self) -> None:
        self._stopping.set()

    def _confirm(self, tp: TopicPartition, offset: int) -> None:
        self._committable[tp] = offset + 1

    async def _commit(self) -> None:
        if not self._committable or self._consumer is None:
            return
        offsets, self._committable = self._committable, {}
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # a rebalance: the new owner re-reads from the last commit
            log.warning("Kafka offset commit failed (%s); those records may be relayed again", _one_line(exc))

    def _subscribed(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        source = self

        class _Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                for tp in revoked:
                    window = source._windows.pop(tp, None)
                    if window is not None:
                        window.flush()
                await source._commit()

            async def on_partitions_assigned(self, assigned):
                log.info("oslo Kafka partitions assigned: %s",
                         ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "none")

        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=30000,  # new `<topic>.<priority>` topics are picked up within 30 s
            **s.security,
        )
        consumer.subscribe(pattern=oslo_topic_pattern(s.topics), listener=_Rebalance())
        return consumer

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        s = self.settings
        consumer = self._subscribed()
        backoff = Backoff()
        while True:
            try:
                await consumer.start()
                break
            except Exception as exc:
                log.warning("oslo Kafka unreachable (%s); retrying in %.1fs", _one_line(exc), backoff.delay)
                metrics.RECONNECTS.labels("kafka").inc()
                if await backoff.sleep(self._stopping):
                    return
        self._consumer = consumer
        log.info("oslo Kafka connected: %s, topics %s, group %s",
                 ",".join(s.bootstrap_servers), oslo_topic_pattern(s.topics), s.group)
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + s.commit_interval_s
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                window = self._windows.get(tp)
                if window is None:
                    window = self._windows[tp] = InOrder(partial(self._confirm, tp))
                for record in records:
                    yield Delivery(record.value or b"", None, tp.topic, window.track(record.offset))
            if loop.time() >= next_commit:
                await self._commit()
                next_commit = loop.time() + s.commit_interval_s

    async def close(self) -> None:
        for window in self._windows.values():
            window.flush()
        await asyncio.sleep(0)
        await self._commit()
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 10)
            except Exception:
                pass
            self._consumer = None
