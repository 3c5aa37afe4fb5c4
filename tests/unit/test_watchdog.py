"""The per-partition watermark and heap: checks fire on event time only, partition by partition."""
from __future__ import annotations

from pipeline.streams.models import SECOND, Expiry
from pipeline.streams.watchdog import Watchdog


def test_nothing_fires_before_the_watermark_passes() -> None:
    wd = Watchdog(lateness_us=60 * SECOND)
    wd.schedule(0, b"k", [Expiry(100 * SECOND, "deadline", "op", "m")])
    wd.observe(0, 160 * SECOND)  # watermark 100: not past
    assert list(wd.due(0)) == []
    wd.observe(0, 161 * SECOND)
    assert list(wd.due(0)) == [(b"k", Expiry(100 * SECOND, "deadline", "op", "m"))]
    assert list(wd.due(0)) == []


def test_partitions_are_independent() -> None:
    wd = Watchdog(lateness_us=0)
    wd.schedule(1, b"k", [Expiry(10, "deadline", "op", "m")])
    wd.observe(0, 1000)
    assert list(wd.due(1)) == [] and list(wd.due(0)) == []
    wd.observe(1, 11)
    assert len(list(wd.due(1))) == 1


def test_the_watermark_never_goes_back() -> None:
    wd = Watchdog(lateness_us=0)
    wd.observe(0, 500)
    wd.observe(0, 100)  # a late event
    assert wd.watermark(0) == 500


def test_earliest_first_and_restore() -> None:
    wd = Watchdog(lateness_us=10)
    wd.schedule(0, b"b", [Expiry(30, "deadline", "x", "2")])
    wd.schedule(0, b"a", [Expiry(20, "deadline", "x", "1")])
    wd.restore(0, 100)  # the watermark recorded in the table
    assert wd.watermark(0) == 100
    assert [k for k, _ in wd.due(0)] == [b"a", b"b"]


def test_a_replayed_backlog_raises_only_what_its_own_events_prove() -> None:
    """An hour of events read in one go: each check sees the watermark of the events read so far."""
    wd = Watchdog(lateness_us=60 * SECOND)
    fired = []
    for second in range(0, 3600, 10):
        ts = second * SECOND
        wd.observe(0, ts)
        if second % 100 == 0:  # an operation starts, deadline 300 s; it ends 250 s later
            wd.schedule(0, f"op{second}".encode(), [Expiry(ts + 300 * SECOND, "deadline", "x", str(second))])
        fired += [k for k, _ in wd.due(0)]
    # every deadline fired exactly when event time passed it + lateness; none before
    assert fired == [f"op{s}".encode() for s in range(0, 3600, 100) if s + 360 < 3600]
