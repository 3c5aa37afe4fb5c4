"""The worker's fetches: answered in rounds (9), and those rounds paced by the traffic (12)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

CEILING_BYTES = 1024 * 1024  # a paced fetch never waits for more than this (one fetch brings up to 50 MB)
UPDATE_EVERY_S = 1.0  # how often a paced fetch's min bytes follow what was received
FLOWING_WAIT_ROUNDS = 2.5  # while the traffic sets the min bytes, a fetch is held this many rounds at most
# No event for a second: a fetch is answered by the first record (no round to wait for) or after
# faust's own max wait (aiokafka's fetch_max_wait_ms as faust sets it).
QUIET_WAIT_MS = 1500


def fetch_in_rounds(min_bytes: int, max_wait_ms: int, round_ms: int = 0) -> Callable[[Any], None]:
    """A consumer patch: the broker answers the worker's fetches once `min_bytes` are there or
    `max_wait_ms` have passed, not as soon as one record is; with `round_ms`, `min_bytes` is only
    the floor of what the fetches wait for (`pace_fetches`).

    Symptom: faust creates its aiokafka consumer with aiokafka's fetch_min_bytes=1 and has no setting
    for it (`AIOKafkaConsumerThread._create_worker_consumer`, faust/transport/drivers/aiokafka.py
    568-630), so under a trickle every fetch of the relay partitions comes back with a record or two
    and the next one goes out at once: encoding and decoding a request and a response for every
    partition, a wake of the event loop, and the broker's work for each. At 300 events/s the worker
    used 0.50 of a core (1.7 ms per record, against 0.18 ms under a backlog) and the broker 0.36;
    with 64 KB or 50 ms, 0.18 and 0.24. A backlog is unchanged: its fetches fill at once.
    Can go: if faust gains a fetch_min_bytes setting (none as of 0.15.3, no issue filed); it sets
    the attributes aiokafka's `AIOKafkaConsumer.start` hands to its fetcher, so re-check that
    method on every aiokafka upgrade (`PATCHED_SOURCES`).
    """

    def patch(consumer: Any) -> None:
        thread = consumer._thread
        create = thread._create_worker_consumer

        def create_worker_consumer(transport: Any) -> Any:
            kafka = create(transport)
            kafka._fetch_min_bytes = min_bytes
            kafka._fetch_max_wait_ms = max_wait_ms
            if round_ms > 0:
                pace_fetches(kafka, min_bytes, round_ms, max_wait_ms)
            return kafka

        thread._create_worker_consumer = create_worker_consumer

    return patch


class FetchPacer:
    """What a paced fetcher received since its last update, and the min bytes that follow from it.

    Touched only on faust's consumer thread, in its event loop: `received` is called from the
    fetcher's `fetched_records`, and the fetcher's own task reads `_fetch_min_bytes` and
    `_fetch_max_wait_ms` there when it
    builds the next round's FetchRequest (`Fetcher._get_actions_per_node`), so no lock is needed and
    the worker's event loop never sees this object."""

    __slots__ = ("ceiling", "fetcher", "floor", "flowing_wait_ms", "idle_wait_ms", "quiet_wait_ms", "received_bytes",
                 "round_s", "since")

    def __init__(self, fetcher: Any, floor: int, round_ms: int, idle_wait_ms: int, ceiling: int = CEILING_BYTES,
                 now: float | None = None) -> None:
        self.fetcher = fetcher
        self.floor = floor
        self.ceiling = max(ceiling, floor)
        self.round_s = round_ms / 1000
        self.idle_wait_ms = idle_wait_ms
        self.flowing_wait_ms = min(idle_wait_ms, max(1, int(round_ms * FLOWING_WAIT_ROUNDS)))
        self.quiet_wait_ms = max(idle_wait_ms, QUIET_WAIT_MS)
        self.received_bytes = 0
        self.since = time.monotonic() if now is None else now

    def min_bytes(self, bytes_per_s: float) -> int:
        """A round's worth of `bytes_per_s`, within the floor and the ceiling; 1 when no event came."""
        if bytes_per_s <= 0:
            return 1
        return int(min(self.ceiling, max(self.floor, bytes_per_s * self.round_s)))

    def max_wait_ms(self, min_bytes: int) -> int:
        """Quiet (no event for a second): the first record answers the fetch, which otherwise waits
        as long as faust's own does, so an idle worker fetches once per `QUIET_WAIT_MS`, not per
        floor wait. A trickle (the floor rules): the floor wait, so one fetch brings several
        events. Once the traffic sets the min bytes, a few rounds only: a pause of the producer (the
        bridge's rounds, a busy machine) then holds the records already there that long, not the
        whole floor wait, which with a fixed 500 ms was the worst-case extra latency at every rate."""
        if min_bytes <= 1:
            return self.quiet_wait_ms
        return self.idle_wait_ms if min_bytes <= self.floor else self.flowing_wait_ms

    def received(self, records: Mapping[Any, list[Any]], now: float | None = None) -> None:
        """Count `records` (what one `fetched_records` handed over); once a second, set the fetcher's
        min bytes from the rate since the last update. The last second alone, not an average: when
        the traffic stops, the fetches wait for less at once (each would otherwise hold for the
        whole max wait while the average decays)."""
        for batch in records.values():
            for record in batch:
                # the sizes the producer serialized (-1 for a missing key or value); events only: the
                # bridges' heartbeats (no key) come every few seconds to every partition, and counted
                # they would keep an idle worker off its quiet wait
                if record.serialized_key_size >= 0:
                    self.received_bytes += record.serialized_key_size + max(record.serialized_value_size, 0)
        now = time.monotonic() if now is None else now
        elapsed = now - self.since
        if elapsed >= UPDATE_EVERY_S:
            min_bytes = self.min_bytes(self.received_bytes / elapsed)
            self.fetcher._fetch_min_bytes = min_bytes
            self.fetcher._fetch_max_wait_ms = self.max_wait_ms(min_bytes)
            self.received_bytes = 0
            self.since = now


def pace_fetches(kafka: Any, floor: int, round_ms: int, idle_wait_ms: int) -> None:
    """A patch on an aiokafka consumer not yet started: once started, its fetcher's min bytes follow
    the traffic, about `round_ms` of the bytes received in the last second (at least `floor`, at
    most `CEILING_BYTES`), updated once a second, and its max wait is `idle_wait_ms` at the floor,
    a few rounds above it; after a second without events, 1 byte and `QUIET_WAIT_MS` (`FetchPacer`).

    Symptom: a fixed min bytes suits one rate only. Each fetch round costs the worker about 1.5 ms
    of CPU (a request and a response over ~70 partitions, in pure Python); relay records are ~4 KB.
    At 64 KB / 40 ms an idle worker used 4.3 % of a core (a round every 40 ms) and 4,510 µs per
    event at 20/s; at 8 KB / 500 ms idle fell to 1.1 % but 1,000/s got p99 308 ms; 16 KB / 150 ms
    made 100/s cheaper (849 µs) but p99 109 ms. Why: aiokafka reads `Fetcher._fetch_min_bytes` and
    `_fetch_max_wait_ms` afresh for every round's FetchRequest but has no public way to change it after `start`, and
    faust calls `consumer._fetcher.fetched_records` itself (`AIOKafkaConsumerThread._fetch_records`),
    so that is where what the worker received is seen; both run on faust's consumer thread.
    Can go: if aiokafka lets fetch_min_bytes change on a running consumer (no such API in 0.14.0,
    no issue filed), or with `fetch_in_rounds`.
    """
    start = kafka.start

    async def start_then_pace() -> None:
        await start()
        fetcher = kafka._fetcher
        pacer = FetchPacer(fetcher, floor, round_ms, idle_wait_ms)
        fetched_records = fetcher.fetched_records

        async def counted(partitions: Any, timeout: float = 0, max_records: int | None = None) -> Any:
            records = await fetched_records(partitions, timeout=timeout, max_records=max_records)
            pacer.received(records)
            return records

        fetcher.fetched_records = counted
        fetcher._pipeline_pacer = pacer  # for tests and a debugger

    kafka.start = start_then_pace
