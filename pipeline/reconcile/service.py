"""The reconciler's I/O shell: the alerts it reads, the questions it asks (in threads, a few at a
time), the observations it writes, the sweep, and its metrics. What to ask and when is `jobs`; what
an answer becomes is `observed`.

Offsets: the alerts consumer commits, per partition, up to the oldest alert whose job is not done,
so a reconciler killed mid-batch reads again what it had not answered; answering again writes the
same observation ids, which the workers drop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import catalog, codec, events, observed
from ..bridge.sink import KafkaSink
from ..config import ConfigError
from . import jobs as jobs_mod
from .api import CAUSES, Api, Failed
from .jobs import Job
from .metrics import LATENCY, OBSERVATIONS, PENDING, REQUESTS

__all__ = ["ReconcileSettings", "Reconciler"]

log = logging.getLogger("pipeline.reconcile")


_SOURCE = {"baremetal": "ironic", "image": "glance"}


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    client: dict  # aiokafka client arguments
    alerts_topic: str
    node_state_topic: str
    topic_prefix: str = events.DEFAULT_TOPIC_PREFIX
    group_id: str = "pipeline-reconciler"
    concurrency: int = 4
    recheck_s: float = 60.0  # first wait before asking again about something still running
    retry_max_s: float = 300.0  # the longest wait between two questions
    give_up_s: float = 3600.0
    sweep_interval_s: float = 0.0
    sweep_page_size: int = 200
    sweep_pages_per_s: float = 2.0
    once: bool = False
    source_label: str | None = None  # the payload's `source`: the service's name unless set (the simulator's)


class Reconciler:
    def __init__(self, settings: ReconcileSettings, api: Api, sink: KafkaSink, values: codec.Encoder,
                 stop: asyncio.Event) -> None:
        self.s = settings
        self.api = api
        self.sink = sink
        self.values = values
        self.stop = stop
        self.jobs: dict[str, Job] = {}
        self.asking: dict[str, asyncio.Task] = {}
        self.limit = asyncio.Semaphore(settings.concurrency)
        self.failing: dict[str, int] = {}  # cause -> failed requests since the last answer
        self.read: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset
        self.caught_up = False  # --once: the alerts read to their end at start
        self.written = 0
        self.failures = 0  # sweeps that failed: --once then exits with 1

    # --- questions and answers ------------------------------------------------------------------

    def add(self, key: str, job: Job) -> None:
        if key not in self.jobs:
            self.jobs[key] = job
            PENDING.set(len(self.jobs))

    def add_listed(self, listed: Iterable[Job]) -> None:
        for job in listed:
            self.add(f"{job.about}:{job.family}:{job.resource}", job)

    async def ask(self, key: str, job: Job) -> None:
        service = catalog.OBSERVABLE[job.family].service
        async with self.limit:
            started = time.monotonic()
            try:
                answer = await asyncio.to_thread(self.api.get, job.family, job.resource)
            except Failed as exc:
                REQUESTS.labels(service, exc.cause).inc()
                self._failed(service, job, exc)
                return
            finally:
                LATENCY.labels(service).observe(time.monotonic() - started)
        REQUESTS.labels(service, "found" if answer is not None else "not_found").inc()
        if self.failing:
            log.info("%s answers again (%s)", service,
                     ", ".join(f"{n} {cause}" for cause, n in sorted(self.failing.items())))
            self.failing.clear()
        job.failures = 0
        observed_at = datetime.now(UTC)
        event = observed.observation(job.family, job.resource, answer, observed_at=observed_at, about=job.about,
                                     source=self.s.source_label or _SOURCE.get(service, service),
                                     topic_prefix=self.s.topic_prefix)
        try:
            await self.write(event)
        except Exception as exc:  # noqa: BLE001 - Kafka did not take it: asked again later, nothing lost
            log.warning("observation of %s %s not written (%s); asking again later", job.family, job.resource,
                        " ".join(str(exc).split()) or type(exc).__name__)
            job.due = time.time() + jobs_mod.next_delay(1, 1.0, self.s.retry_max_s)
            return
        OBSERVATIONS.labels("sweep" if job.about == "sweep" else "list" if job.about == "list" else "alert").inc()
        now = time.time()
        if jobs_mod.settled(job, observed.read(event), observed.micros_of(observed_at)) \
                or now >= job.give_up_at:
            job.done = True
        else:  # still running: asked again, less and less often
            job.attempts += 1
            job.due = now + jobs_mod.next_delay(job.attempts, self.s.recheck_s, self.s.retry_max_s)

    def _failed(self, service: str, job: Job, exc: Failed) -> None:
        job.failures += 1
        delay = jobs_mod.next_delay(job.failures, 1.0, self.s.retry_max_s)
        job.due = time.time() + max(delay, exc.retry_after or 0.0)
        if exc.cause not in self.failing:  # one line per cause, until the API answers again
            log.warning("%s %s: %s (%s); nothing is closed meanwhile, asking again with backoff",
                        service, exc.cause, CAUSES.get(exc.cause, exc.cause), exc.detail)
        self.failing[exc.cause] = self.failing.get(exc.cause, 0) + 1

    async def write(self, event: dict) -> None:
        topic = event["topic"]
        value, content_type = self.values.event(event, topic)
        fut = await self.sink.send(topic, value, events.relay_key(event), events.relay_headers(event, content_type))
        await fut
        self.written += 1

    # --- the alerts -----------------------------------------------------------------------------

    def on_alert(self, alert: dict, origin: tuple[str, int, int]) -> None:
        kind = alert.get("kind")
        if kind in jobs_mod.ASKED:
            job = jobs_mod.from_alert(alert, time.time(), self.s.give_up_s, origin)
            if job is not None:
                self.add(job.about, job)
            return
        for job in self.jobs.values():
            if jobs_mod.closes(alert, job):
                job.done = True

    async def consume(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import InconsistentGroupProtocolError

        consumer = AIOKafkaConsumer(group_id=self.s.group_id, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.s.client)
        # a pattern, not the name: naming a topic the workers have not created yet would make a broker
        # with auto.create.topics.enable create it, with its own partition count
        consumer.subscribe(pattern=f"^{re.escape(self.s.alerts_topic)}$")
        await consumer.start()
        ends: dict | None = None
        try:
            last_commit = time.monotonic()
            while not self.stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                except InconsistentGroupProtocolError:
                    raise ConfigError(f"--group-id {self.s.group_id}: the group belongs to another kind of consumer "
                                      "(a worker's --app-id?)") from None
                for tp, records in batch.items():
                    for rec in records:
                        self.read[(tp.topic, tp.partition)] = rec.offset + 1
                        try:
                            alert = codec.decode_value(rec.value)
                        except codec.CodecError as exc:
                            log.warning("%s[%d]@%d: an alert we cannot read (%s): skipped",
                                        tp.topic, tp.partition, rec.offset, exc.reason)
                            continue
                        self.on_alert(alert, (tp.topic, tp.partition, rec.offset))
                if self.s.once and ends is None and consumer.assignment():
                    ends = await consumer.end_offsets(list(consumer.assignment()))
                if ends is not None and not self.caught_up:
                    self.caught_up = True
                    for tp, end in ends.items():
                        if self.read.get((tp.topic, tp.partition), await consumer.position(tp)) < end:
                            self.caught_up = False
                if time.monotonic() - last_commit > 2.0:
                    await self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            await self._commit(consumer)
            await consumer.stop()

    async def _commit(self, consumer: Any) -> None:
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        offsets = {}
        for (topic, partition), next_offset in self.read.items():
            open_offsets = [j.origin[2] for j in self.jobs.values()
                            if not j.done and j.origin and j.origin[:2] == (topic, partition)]
            offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(min(open_offsets, default=next_offset), "")
        if offsets:
            try:
                await consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a rebalance: the next owner reads again, same ids
                log.info("offsets not committed (%s)", " ".join(str(exc).split()) or type(exc).__name__)

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.consume(), name="alerts")]
        if self.s.sweep_interval_s > 0:
            from .sweep import sweep_forever

            tasks.append(asyncio.create_task(sweep_forever(self), name="sweep"))  # --once: one sweep
        try:
            while not self.stop.is_set():
                self._schedule()
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                swept = all(t.done() for t in tasks if t.get_name() == "sweep")
                if self.s.once and self.caught_up and swept and not self.jobs and not self.asking:
                    log.info("--once: every alert read and answered (%d observations written)", self.written)
                    break
                try:
                    await asyncio.wait_for(self.stop.wait(), 0.2)
                except TimeoutError:
                    pass
        finally:
            self.stop.set()
            for task in self.asking.values():
                task.cancel()
            await asyncio.gather(*self.asking.values(), *tasks, return_exceptions=True)

    def _asked(self, key: str, job: Job, task: asyncio.Task) -> None:
        self.asking.pop(key, None)
        if not task.cancelled() and task.exception() is not None:  # a bug, not the API: say so, ask later
            log.error("asking about %s %s failed", job.family, job.resource, exc_info=task.exception())
            job.due = time.time() + self.s.retry_max_s

    def _schedule(self) -> None:
        now = time.time()
        for key, job in list(self.jobs.items()):
            if key in self.asking:
                continue
            if job.done:
                del self.jobs[key]
            elif job.due <= now:
                task = asyncio.create_task(self.ask(key, job), name=f"ask {job.resource}")
                self.asking[key] = task
                task.add_done_callback(functools.partial(self._asked, key, job))
        PENDING.set(len(self.jobs))
