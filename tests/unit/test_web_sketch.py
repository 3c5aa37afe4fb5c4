"""The duration sketch: quantiles within its relative accuracy, merge = union, window by event time."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.web.sketch import DurationSketch, merged


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(math.floor(q * (len(ordered) - 1)))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=3.6e6), min_size=1, max_size=400))
def test_quantiles_within_relative_accuracy(durations: list[float]) -> None:
    sketch = DurationSketch(window_s=600, slice_s=60, accuracy=0.01)
    for d in durations:
        sketch.add("baremetal.node.power_set", d, end_time=1_000.0)
    row = sketch.stats()["baremetal.node.power_set"]
    assert row["count"] == len(durations)
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        truth = exact_quantile(durations, q)
        assert abs(row[name] - truth) <= 0.0101 * truth + 0.001, (name, row[name], truth)
    assert row["max_ms"] == round(max(durations), 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.5, max_value=1e6), st.booleans(), st.integers(0, 1)), min_size=1, max_size=200))
def test_merging_two_workers_equals_one_sketch_of_everything(rows: list[tuple[float, bool, int]]) -> None:
    one = DurationSketch(600, 60)
    workers = [DurationSketch(600, 60), DurationSketch(600, 60)]
    for i, (ms, error, worker) in enumerate(rows):
        end = 10_000.0 + i
        one.add("task", ms, end, error)
        workers[worker].add("task", ms, end, error)
    # through JSON, the way a peer's sketch arrives over HTTP
    total = merged((DurationSketch.from_json(w.to_json()) for w in workers), 600, 60)
    assert total.stats() == one.stats()


def test_window_ends_at_the_newest_end_and_old_slices_go() -> None:
    sketch = DurationSketch(window_s=300, slice_s=60)
    sketch.add("image.upload", 5_000, end_time=0.0)
    sketch.add("image.upload", 7_000, end_time=100.0, error=True)
    assert sketch.stats()["image.upload"]["count"] == 2
    sketch.add("image.upload", 9_000, end_time=1_000.0)
    row = sketch.stats()["image.upload"]
    assert (row["count"], row["errors"], row["max_ms"]) == (1, 0, 9000.0)
    assert min(sketch.slices) >= (1_000 - 300) // 60
    # an end older than the window is not counted
    sketch.add("image.upload", 1.0, end_time=10.0)
    assert sketch.stats()["image.upload"]["count"] == 1


def test_zero_and_negative_durations_count_without_breaking_the_log_scale() -> None:
    sketch = DurationSketch(600, 60)
    for ms in (0.0, -3.0, 10.0):
        sketch.add("task", ms, end_time=50.0)
    row = sketch.stats()["task"]
    assert row["count"] == 3 and row["p50_ms"] == 0.0 and row["max_ms"] == 10.0


def test_memory_is_per_bucket_not_per_duration() -> None:
    sketch = DurationSketch(600, 600)
    rng = random.Random(7)
    for _ in range(100_000):
        sketch.add("deploy", rng.lognormvariate(10, 1), end_time=1.0)
    (operations,) = sketch.slices.values()
    assert len(operations["deploy"].buckets) < 1_000


def test_empty_sketch_has_no_stats() -> None:
    assert DurationSketch().stats() == {}


def test_reconciled_operations_are_counted_apart_and_kept_out_of_the_durations() -> None:
    sketch = DurationSketch(window_s=900, slice_s=60)
    for i in range(10):
        sketch.add("baremetal.node.power_set", 1000.0 + i, end_time=1_000_000.0 + i)
    sketch.add("baremetal.node.power_set", 3_600_000.0, end_time=1_000_020.0, reconciled=True)  # an upper bound
    row = sketch.stats()["baremetal.node.power_set"]
    assert (row["count"], row["reconciled"], row["errors"]) == (10, 1, 0)
    assert row["max_ms"] < 1100  # the reconciled hour is not a duration
    other = DurationSketch(window_s=900, slice_s=60)
    other.add("baremetal.node.power_set", 0.0, end_time=1_000_030.0, reconciled=True)
    sketch.merge(other)
    assert sketch.stats()["baremetal.node.power_set"]["reconciled"] == 2
    assert DurationSketch.from_json(sketch.to_json()).stats() == sketch.stats()
