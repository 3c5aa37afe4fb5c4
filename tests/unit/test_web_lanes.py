"""Each lane's watermark and age: GET /api/lanes rows and the /metrics gauges (pure parts)."""
import time

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.web import queries
from pipeline.web.metrics import PipelineCollector, WorkerFigures, pipeline_metrics
from pipeline.web.observe import Observations

NOW = 1_800_000_100.0
LANES = {("notifications.baremetal.node", 0): int((NOW - 8) * 1e6),
         ("notifications.baremetal.node", 1): int((NOW - 400) * 1e6),
         ("notifications.image", 2): 0}  # no watermark yet


def test_lane_rows_oldest_first_with_rfc3339_watermarks() -> None:
    rows = queries.lane_rows(LANES, NOW)
    assert [(r["topic"], r["partition"]) for r in rows] == [
        ("notifications.image", 2), ("notifications.baremetal.node", 1), ("notifications.baremetal.node", 0)]
    assert rows[0] == {"topic": "notifications.image", "partition": 2, "watermark": None, "age_s": None}
    assert rows[1]["age_s"] == 400.0 and rows[1]["watermark"] == "2027-01-15T07:55:00.000000Z"
    assert queries.sort_lanes(reversed(rows)) == rows  # merging workers' answers keeps the order


def test_metrics_expose_each_lane_age_and_the_oldest() -> None:
    families = {f.name: f for f in pipeline_metrics(Observations(), WorkerFigures(lanes=LANES, now=NOW))}
    ages = {(s.labels["topic"], s.labels["partition"]): s.value for s in families["pipeline_watermark_age_seconds"].samples}
    assert ages == {("notifications.baremetal.node", "0"): 8.0, ("notifications.baremetal.node", "1"): 400.0}
    assert [s.value for s in families["pipeline_oldest_watermark_age_seconds"].samples] == [400.0]
    empty = {f.name: f for f in pipeline_metrics(Observations(), WorkerFigures())}
    assert not empty["pipeline_oldest_watermark_age_seconds"].samples  # no lanes: no figure, not 0


def test_the_collector_reads_the_lanes_at_scrape_time() -> None:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(Observations(), lambda: WorkerFigures(lanes={("t", 0): 1_000_000}, now=time.time())))
    text = generate_latest(registry).decode()
    assert 'pipeline_watermark_age_seconds{partition="0",topic="t"}' in text
    assert "pipeline_oldest_watermark_age_seconds " in text
