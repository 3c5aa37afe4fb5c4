"""`pipeline bench --compare HEAD` on the real brokers: both versions' worker and bridge read the
same records, each round's figures land in compare.json and the table, and nothing is left behind."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.bench import compare
from tests.support.eventually import eventually

KAFKA = "127.0.0.1:9092"


async def _topics(prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


@pytest.mark.integration
def test_an_a_b_run_measures_both_versions_on_the_same_records(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--compare", "HEAD", "--events", "12000",
                           "--compare-rounds", "1", "--report", str(report)],
                          cwd=compare.CHECKOUT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "compare.json").read_text())
    assert not report.exists()  # the full bench's report is not overwritten by an A/B
    assert result["stages"] == ["worker", "bridge"] and result["rounds"] == 1
    ref, here = result["sides"]
    assert ref["label"].startswith("HEAD (") and here["label"].startswith("this checkout (")
    for side in (ref, here):
        for stage in ("worker", "bridge"):
            [(rate, cpu_us, peak_rss_mb)] = side[stage]
            assert rate > 0 and cpu_us > 0 and peak_rss_mb > 20, (side["label"], stage)
    assert "worker: CPU per record" in done.stdout and "bridge: CPU per record" in done.stdout
    assert "round 1 of 1: worker of HEAD" in done.stderr and "round 1 of 1: bridge of this checkout" in done.stderr
    eventually(lambda: not asyncio.run(_topics(f"bench-{result['run']}")), 30, "the A/B's topics deleted")
