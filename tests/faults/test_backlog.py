"""docs/contracts.md: "a backlog or a restart must not raise false missing-end alerts". The fleet (whose ground
truth has no lost end) is relayed first, then a worker with the default watchdog settings reads it
as a backlog, as after an outage of the workers: it must raise no missing_end and no orphan_end."""
from __future__ import annotations

import asyncio
import collections

import pytest

from tests.support.faults import Pipeline, caught_up, derived

from .conftest import FIGURES

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_backlog_raises_no_false_missing_end(broker, fleet, tmp_path) -> None:
    path, _ = fleet

    async def run():
        p = Pipeline(broker, tmp_path)
        try:
            bridge = p.bridge("--source", f"file:{path}")
            assert await bridge.exited(120) == 0, bridge.tail()
            p.worker("--lateness", "60")  # the default watermark lateness, overriding the suite's
            await caught_up(p)
            return await derived(broker.kafka, p.names.output_prefix)
        finally:
            await p.stop()
            await p.cleanup()

    got = asyncio.run(run())
    kinds = collections.Counter(a["kind"] for a in got.alerts.values())
    FIGURES.append(f"backlog read by a worker with default lateness: alerts {dict(kinds)} (truth: no lost end)")
    assert kinds["missing_end"] == 0 and kinds["orphan_end"] == 0, (
        f"false alerts on a backlog: {dict(kinds)}; e.g. "
        f"{[a for a in got.alerts.values() if a['kind'] == 'missing_end'][:2]}")
