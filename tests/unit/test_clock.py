"""The lane clock: event time and the bridges' heartbeats (pipeline/streams/clock.py)."""
from pipeline.streams.clock import MISSES, LaneClocks

S = 1_000_000  # µs
LATE = 5 * S
IV = 5 * S  # heartbeat interval
LANE = ("notifications.baremetal.node", 0)
T0 = 1_800_000_000 * S


def beats(clock, lane, bridge, start, count, *, vouch=None, interval=IV):
    """`count` heartbeats of `bridge` every `interval` from `start`; vouching `vouch` (held) or the
    time written (caught up). Returns the watermark after the last."""
    mark = None
    for i in range(count):
        sent = start + i * interval
        mark = clock.heartbeat(lane, bridge, sent if vouch is None else vouch, sent, interval)
    return mark


def test_event_time_alone_trails_the_newest_event_by_the_lateness() -> None:
    clock = LaneClocks(LATE)
    assert clock.watermark(LANE) == 0
    assert clock.observe(LANE, T0) == T0 - LATE
    assert clock.observe(LANE, T0 - 60 * S) == T0 - LATE  # an older event does not move it back
    assert clock.watermark(("other", 0)) == 0


def test_a_caught_up_bridge_moves_a_quiet_lane_after_the_warm_up() -> None:
    clock = LaneClocks(LATE)
    clock.observe(LANE, T0)
    # the first heartbeats read after the clock was made do not count: another replica may not
    # have been read yet
    assert beats(clock, LANE, "a", T0 + S, MISSES) == T0 - LATE
    mark = beats(clock, LANE, "a", T0 + S + MISSES * IV, 1)
    assert mark == T0 + S + MISSES * IV - LATE
    # and from then on every heartbeat moves it
    assert beats(clock, LANE, "a", T0 + S + (MISSES + 1) * IV, 1) == T0 + S + (MISSES + 1) * IV - LATE


def test_the_watermark_is_the_later_of_event_time_and_heartbeats() -> None:
    clock = LaneClocks(LATE)
    beats(clock, LANE, "a", T0, MISSES + 1)
    hb_mark = clock.watermark(LANE)
    assert hb_mark == T0 + MISSES * IV - LATE
    # an event newer than the heartbeats (clock skew between OpenStack and the bridge) wins
    assert clock.observe(LANE, T0 + 100 * S) == T0 + 100 * S - LATE
    # and a heartbeat behind it does not take it back
    assert beats(clock, LANE, "a", T0 + (MISSES + 1) * IV, 1) == T0 + 100 * S - LATE


def test_a_silent_bridge_holds_the_lane() -> None:
    """Bridge stopped, Kafka unreachable from it: no heartbeat, and nothing else moves the lane."""
    clock = LaneClocks(LATE)
    clock.observe(LANE, T0)
    mark = beats(clock, LANE, "a", T0, MISSES + 1)
    assert clock.watermark(LANE) == mark  # nothing read meanwhile: nothing moved
    # back after an outage as a new process: the old one is gone, the new one vouches for now
    back = T0 + 600 * S
    assert clock.heartbeat(LANE, "a2", back, back, IV) == back - LATE
    assert clock.bridges(LANE) == {"a2": back}


def test_a_held_heartbeat_keeps_the_lane_where_the_bridge_was_caught_up() -> None:
    """A RabbitMQ backlog: the bridge can reach Kafka but is not caught up; it repeats its old time."""
    clock = LaneClocks(LATE)
    beats(clock, LANE, "a", T0, MISSES + 1)
    held = T0 + MISSES * IV
    mark = beats(clock, LANE, "a", T0 + (MISSES + 1) * IV, 20, vouch=held)
    assert mark == held - LATE


def test_two_replicas_the_lane_follows_the_one_behind() -> None:
    clock = LaneClocks(LATE)
    for i in range(10):
        t = T0 + i * IV
        clock.heartbeat(LANE, "a", t, t, IV)
        clock.heartbeat(LANE, "b", T0, t, IV)  # alive, stuck at T0 (its own deliveries unconfirmed)
    assert clock.watermark(LANE) == T0 - LATE
    assert clock.bridges(LANE) == {"a": T0 + 9 * IV, "b": T0}


def test_a_replica_that_stopped_no_longer_holds_the_lane_after_a_few_intervals() -> None:
    clock = LaneClocks(LATE)
    for i in range(MISSES + 1):
        t = T0 + i * IV
        clock.heartbeat(LANE, "a", t, t, IV)
        clock.heartbeat(LANE, "b", t, t, IV)
    last_b = T0 + MISSES * IV
    assert clock.watermark(LANE) == last_b - LATE
    # b is gone (killed, scaled down); a goes on
    marks = [clock.heartbeat(LANE, "a", t, t, IV) for t in (last_b + k * IV for k in range(1, MISSES + 2))]
    # within MISSES intervals b still holds the lane at its last time, then it drops out
    assert marks[:MISSES] == [last_b - LATE] * MISSES
    assert marks[MISSES] == last_b + (MISSES + 1) * IV - LATE
    assert set(clock.bridges(LANE)) == {"a"}


def test_a_replica_not_yet_read_on_the_lane_cannot_be_overtaken_after_a_restart() -> None:
    """Worker restarted: on this lane it reads a's heartbeat before b's, b being stuck at T0."""
    clock = LaneClocks(LATE)
    clock.restore(LANE, T0 - LATE)
    t = T0 + 100 * S
    assert clock.heartbeat(LANE, "a", t, t, IV) == T0 - LATE
    for k in range(1, MISSES + 2):
        clock.heartbeat(LANE, "b", T0, t + k * IV, IV)
        clock.heartbeat(LANE, "a", t + k * IV, t + k * IV, IV)
    assert clock.watermark(LANE) == T0 - LATE


def test_lanes_are_independent() -> None:
    clock = LaneClocks(LATE)
    other = ("notifications.baremetal.node", 1)
    beats(clock, LANE, "a", T0, MISSES + 1)
    assert clock.watermark(other) == 0
    clock.observe(other, T0 - 100 * S)
    assert clock.watermark(other) == T0 - 100 * S - LATE
    assert clock.watermark(LANE) == T0 + MISSES * IV - LATE


def test_restore_and_clear() -> None:
    clock = LaneClocks(LATE)
    clock.restore(LANE, T0)
    assert clock.watermark(LANE) == T0
    clock.restore(LANE, T0 - S)  # never lowered
    assert clock.watermark(LANE) == T0
    clock.clear()
    assert clock.watermark(LANE) == 0


def test_heartbeat_fields_from_the_record() -> None:
    import pytest

    from pipeline.streams.clock import heartbeat_of
    from pipeline.streams.models import micros

    event = {"timestamp": "2027-01-15T08:00:00.000000Z",
             "payload": {"bridge": "b", "sent_at": "2027-01-15T08:00:01.500000Z", "interval_s": 5.0}}
    vouched = micros(event["timestamp"])
    bridge, at, sent, interval = heartbeat_of(event, vouched)
    assert bridge == "b" and at == vouched and sent - vouched == 1_500_000 and interval == IV
    for bad in ({}, {"bridge": "", "sent_at": "x", "interval_s": 5}, {"bridge": "b", "sent_at": "nope", "interval_s": 5},
                {"bridge": "b", "sent_at": "2027-01-15T08:00:01Z", "interval_s": 0}, "text"):
        with pytest.raises(ValueError):
            heartbeat_of({**event, "payload": bad}, vouched)
