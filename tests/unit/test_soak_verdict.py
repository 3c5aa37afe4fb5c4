"""The soak's verdict on memory: the bridge's first sample after the warm-up against its last; the
worker, restarted every cycle, compared at the end of each cycle (figures of the hour's soak)."""
from __future__ import annotations

from pipeline.bench.soak import verdict


def _sample(at_s: float, cycle: int, bridge: float, worker: float, operations: int = 100, matched: int = 100) -> dict:
    return {"at_s": at_s, "cycle": cycle, "bridge_rss_mb": bridge, "worker_rss_mb": worker,
            "operations": operations, "matched": matched}


def test_worker_compared_at_the_end_of_each_cycle() -> None:
    samples = [_sample(300, 0, 46, 130), _sample(590, 0, 50, 167),
               _sample(660, 1, 54, 122), _sample(1220, 1, 55, 193),  # just restarted, then its end
               _sample(1300, 2, 57, 125), _sample(1900, 2, 59.4, 208, operations=100, matched=98)]
    out = verdict(samples, warmup_s=600)
    assert out["worker_rss_growth"] == round(208 / 193 - 1, 4)  # not 208 / 122
    assert out["bridge_rss_growth"] == round(59.4 / 54 - 1, 4)
    assert out["worker_rss_mb_cycle_ends"] == [167, 193, 208]
    assert out["lost"] == 2 and out["operations"] == 600


def test_a_growing_worker_shows() -> None:
    samples = [_sample(700, 1, 50, 200), _sample(1200, 1, 50, 200), _sample(1800, 2, 50, 260)]
    assert verdict(samples, warmup_s=600)["worker_rss_growth"] == 0.3
