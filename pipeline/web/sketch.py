"""Operation durations over a recent window: a mergeable log-bucketed histogram. Pure: no I/O.

Each duration lands in bucket `ceil(log_gamma(ms))` with gamma = (1 + a) / (1 - a), so every quantile
read back is within relative error `a` of a true sample (DDSketch's guarantee); memory is one counter
per occupied bucket, about 2,000 buckets cover 1 µs to 10 days at a = 1 %. Time is cut in slices of
`slice_s` seconds of event time (the operation's end); a window is the union of its slices, and two
sketches (two workers) merge by adding counters, which is what makes the fleet-wide figures exact up
to the bucket width. The window ends at the newest end seen (the watermark), not at the wall clock, so
a replayed backlog shows its own figures instead of none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ACCURACY = 0.01
QUANTILES: tuple[tuple[str, float], ...] = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


@dataclass(slots=True)
class Histogram:
    """Durations of one operation in one slice."""

    count: int = 0
    errors: int = 0
    # closed from the API's answer (pipeline reconcile): counted apart, their durations are upper
    # bounds (docs/reconcile.md) and stay out of the quantiles
    reconciled: int = 0
    zeros: int = 0  # durations <= 0 ms (clock skew between publishers), kept apart from the log scale
    max_ms: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)

    def merge(self, other: Histogram) -> None:
        self.count += other.count
        self.errors += other.errors
        self.reconciled += other.reconciled
        self.zeros += other.zeros
        self.max_ms = max(self.max_ms, other.max_ms)
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "reconciled": self.reconciled,
            "zeros": self.zeros,
            "max_ms": self.max_ms,
            "buckets": {str(k): v for k, v in self.buckets.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            count=int(data["count"]),
            errors=int(data.get("errors", 0)),
            reconciled=int(data.get("reconciled", 0)),
            zeros=int(data.get("zeros", 0)),
            max_ms=float(data.get("max_ms", 0.0)),
            buckets={int(k): int(v) for k, v in data.get("buckets", {}).items()},
        )


class DurationSketch:
    """Per-operation duration histograms in time slices; `add` is O(1), memory bounded by the window."""

    def __init__(self, window_s: float = 900.0, slice_s: float = 60.0, accuracy: float = DEFAULT_ACCURACY) -> None:
        if window_s <= 0 or slice_s <= 0 or not 0 < accuracy < 1:
            raise ValueError("window_s and slice_s must be positive and accuracy in (0, 1)")
        self.window_s = window_s
        self.slice_s = slice_s
        self.accuracy = accuracy
        self._gamma = (1 + accuracy) / (1 - accuracy)
        self._log_gamma = math.log(self._gamma)
        self.slices: dict[int, dict[str, Histogram]] = {}
        self.watermark: float | None = None  # newest end time seen, epoch seconds

    # -- writing ---------------------------------------------------------------------------------------

    def bucket(self, ms: float) -> int:
        return math.ceil(math.log(ms) / self._log_gamma)

    def value(self, index: int) -> float:
        """The representative of a bucket: its relative midpoint, within `accuracy` of all it holds."""
        return 2 * self._gamma**index / (self._gamma + 1)

    def add(self, operation: str, duration_ms: float, end_time: float, error: bool = False,
            reconciled: bool = False) -> None:
        slice_index = int(end_time // self.slice_s)
        if self.watermark is not None and slice_index < self._first_slice(self.watermark):
            return  # ended before the window: it would be expired at once
        histogram = self.slices.setdefault(slice_index, {}).get(operation)
        if histogram is None:
            histogram = self.slices[slice_index][operation] = Histogram()
        if reconciled:
            histogram.reconciled += 1
        else:
            self._count(histogram, duration_ms, error)
        if self.watermark is None or end_time > self.watermark:
            self.watermark = end_time
            self._expire()

    def _count(self, histogram: Histogram, duration_ms: float, error: bool) -> None:
        histogram.count += 1
        histogram.errors += bool(error)
        if duration_ms > 0 and math.isfinite(duration_ms):
            index = self.bucket(duration_ms)
            histogram.buckets[index] = histogram.buckets.get(index, 0) + 1
            histogram.max_ms = max(histogram.max_ms, duration_ms)
        else:
            histogram.zeros += 1

    def _first_slice(self, watermark: float) -> int:
        return int((watermark - self.window_s) // self.slice_s) + 1

    def _expire(self) -> None:
        assert self.watermark is not None
        first = self._first_slice(self.watermark)
        for index in [i for i in self.slices if i < first]:
            del self.slices[index]

    # -- merging and reading ---------------------------------------------------------------------------

    def merge(self, other: DurationSketch) -> None:
        if (other.slice_s, other.accuracy) != (self.slice_s, self.accuracy):
            raise ValueError("sketches with different slices or accuracy do not merge")
        for index, operations in other.slices.items():
            into = self.slices.setdefault(index, {})
            for operation, histogram in operations.items():
                into.setdefault(operation, Histogram()).merge(histogram)
        if other.watermark is not None and (self.watermark is None or other.watermark > self.watermark):
            self.watermark = other.watermark
        if self.watermark is not None:
            self._expire()

    def window(self) -> dict[str, Histogram]:
        """Each operation's histogram over the window ending at the watermark."""
        totals: dict[str, Histogram] = {}
        if self.watermark is None:
            return totals
        first = self._first_slice(self.watermark)
        for index, operations in self.slices.items():
            if index < first:
                continue
            for operation, histogram in operations.items():
                totals.setdefault(operation, Histogram()).merge(histogram)
        return totals

    def quantile(self, histogram: Histogram, q: float) -> float:
        if histogram.count == 0:
            return 0.0
        rank = q * (histogram.count - 1)
        seen = histogram.zeros
        if seen > rank:
            return 0.0
        for index in sorted(histogram.buckets):
            seen += histogram.buckets[index]
            if seen > rank:
                return min(self.value(index), histogram.max_ms)
        return histogram.max_ms

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per operation: count, errors, p50/p95/p99/max in ms over the window (operations ended by
        their notification), and reconciled (closed from the API's answer, apart)."""
        out: dict[str, dict[str, Any]] = {}
        for operation, histogram in sorted(self.window().items()):
            row: dict[str, Any] = {"count": histogram.count, "errors": histogram.errors,
                                   "reconciled": histogram.reconciled}
            for name, q in QUANTILES:
                row[name] = round(self.quantile(histogram, q), 3)
            row["max_ms"] = round(histogram.max_ms, 3)
            out[operation] = row
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "slice_s": self.slice_s,
            "accuracy": self.accuracy,
            "watermark": self.watermark,
            "slices": {
                str(index): {op: h.to_json() for op, h in operations.items()}
                for index, operations in self.slices.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DurationSketch:
        sketch = cls(float(data["window_s"]), float(data["slice_s"]), float(data["accuracy"]))
        sketch.watermark = None if data.get("watermark") is None else float(data["watermark"])
        sketch.slices = {
            int(index): {op: Histogram.from_json(h) for op, h in operations.items()}
            for index, operations in data.get("slices", {}).items()
        }
        return sketch


def merged(sketches: Iterable[DurationSketch], window_s: float, slice_s: float, accuracy: float = DEFAULT_ACCURACY) -> DurationSketch:
    total = DurationSketch(window_s, slice_s, accuracy)
    for sketch in sketches:
        total.merge(sketch)
    return total
