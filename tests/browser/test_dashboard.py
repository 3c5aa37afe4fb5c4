"""The dashboard in Debian's headless Chromium: two workers on the real Kafka fed a fleet's traffic;
the numbers the rendered page shows are checked against the JSON API (and the API against what was
sent), and a screenshot is saved (.bench/dashboard.png). Chromium comes from `stack/chromium.sh`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline import codec, observed
from tests.support.eventually import eventually
from tests.support.ports import free_port
from tests.support.web_traffic import REPO, WorkerProcess, feed_mixed_fleet, get, produce, utc

pytestmark = pytest.mark.integration

FLAGS = ("--lateness", "0", "--deadline", "baremetal.node.provision_set=300", "--orphan-grace", "60")
SCREENSHOT = REPO / ".bench" / "dashboard.png"


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("Chromium is not installed: run `bash stack/chromium.sh` (apt-get install chromium)")


def headless(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=8000", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


class Page(HTMLParser):
    """Texts of elements with an id or a data-k, and the rows of each table body."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.by_k: dict[str, str] = {}
        self.rows: dict[str, list[list[tuple[str, dict]]]] = {}
        self.body_attrs: dict[str, str] = {}
        self._open: list[tuple[str, dict, list[str]]] = []
        self._tbody: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body_attrs = a
        if tag == "tbody":
            self._tbody = a.get("id")
            self.rows[self._tbody] = []
        elif tag == "tr" and self._tbody:
            self.rows[self._tbody].append([])
        self._open.append((tag, a, []))

    def handle_data(self, data: str) -> None:
        for _, _, texts in self._open:
            texts.append(data)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, a, texts = self._open.pop()
            text = "".join(texts).strip()
            if "id" in a:
                self.by_id[a["id"]] = text
            if "data-k" in a:
                self.by_k[a["data-k"]] = text
            if name == "td" and self._tbody and self.rows[self._tbody]:
                self.rows[self._tbody][-1].append((text, a))
            if name == "tbody":
                self._tbody = None
            if name == tag:
                break


def number(text: str) -> float:
    return float(text.replace("%", "").strip())


def shown_ms(value: float) -> float:
    """The dashboard's rounding: whole ms from 100 ms, one decimal below."""
    return float(round(value)) if value >= 100 else round(value, 1)


def observation(prefix: str, node: str, sent: dict) -> tuple[str, bytes, bytes]:
    """The relay record of Ironic's answer for `node`: the deploy finished, the node active."""
    answer = {"uuid": node, "power_state": sent["power_state"], "target_power_state": None,
              "provision_state": "active", "target_provision_state": None, "maintenance": sent["maintenance"],
              "updated_at": utc(20).isoformat()}
    event = observed.observation("baremetal.node", node, answer, observed_at=utc(), about="browser-test",
                                 source="ironic", topic_prefix=prefix)
    return event["topic"], node.encode(), codec.encode_event(event)


def test_dashboard_shows_what_the_api_says(tmp_path: Path, unique: str) -> None:
    prefix = f"webui{unique}."
    workers = [WorkerProcess(tmp_path, f"webui-{unique}", prefix, free_port(), *FLAGS, name=f"ui{i}").start()
               for i in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        eventually(lambda: all(get(w.url + "/api/summary")[1].get("workers") == 2 for w in workers), 60,
                   "the two workers see each other", interval=0.5)
        fleet, _ = feed_mixed_fleet(workers[0], prefix)
        url = workers[0].url
        time.sleep(2.5)  # past the scan cache, so the page and the API read the same scan

        dom = headless(tmp_path, "--dump-dom", url + "/?refresh=600")
        assert dom.returncode == 0, dom.stderr[-2000:]
        page = Page()
        page.feed(dom.stdout)
        assert int(page.body_attrs.get("data-loaded", "0")) >= 1, page.by_id.get("error")

        summary = get(url + "/api/summary")[1]
        stats = get(url + "/api/operations/stats")[1]
        missing = get(url + "/api/operations/open?missing_end=true&limit=10")[1]
        loss = summary["loss"]

        # the API against what was sent
        truth_power = Counter(n["power_state"] for n in fleet.nodes.values())
        truth_provision = Counter(n["provision_state"] for n in fleet.nodes.values())
        assert summary["workers"] == 2 and not summary["partial"]
        assert summary["nodes"]["total"] == len(fleet.nodes) == 200
        assert summary["nodes"]["power_state"] == dict(truth_power)
        assert summary["nodes"]["provision_state"] == dict(truth_provision)
        assert summary["nodes"]["maintenance"] == sum(n["maintenance"] for n in fleet.nodes.values())
        assert summary["missing_ends"] == 20

        # the page against the API
        assert page.by_id["workers"] == "2"
        assert int(page.by_id["events"]) == summary["events"] == len(fleet.records)
        assert int(page.by_id["nodes-total"]) == summary["nodes"]["total"]
        assert int(page.by_id["nodes-maintenance"]) == summary["nodes"]["maintenance"]
        assert int(page.by_id["open-total"]) == sum(summary["open_operations"].values())
        assert int(page.by_id["missing-total"]) == summary["missing_ends"]
        for state, n in summary["nodes"]["power_state"].items():
            assert int(page.by_k[f"power:{state}"]) == n
        for state, n in summary["nodes"]["provision_state"].items():
            assert int(page.by_k[f"provision:{state}"]) == n
        assert stats["operations"], stats
        for operation, row in stats["operations"].items():
            assert int(page.by_k[f"count:{operation}"]) == row["count"]
            assert int(page.by_k[f"errors:{operation}"]) == row["errors"]
            for short, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
                assert number(page.by_k[f"{short}:{operation}"]) == shown_ms(row[key]), (operation, short)
        for publisher, row in loss.items():
            assert int(page.by_k[f"started:{publisher}"]) == row["started"]
            assert int(page.by_k[f"missing:{publisher}"]) == row.get("missing", 0)
            assert number(page.by_k[f"rate:{publisher}"]) == round(100 * row["rate"], 2)
        shown = [cells[0][1]["title"] for cells in page.rows["missing"]]
        assert shown == [o["resource_uuid"] for o in missing["operations"]] and len(shown) == 10

        # five of the lost deploy ends answered by the API (pipeline reconcile's observations): the page
        # shows those operations reconciled, apart from the ones that ended by notification
        answered = [o["resource_uuid"] for o in missing["operations"][:5]]
        asyncio.run(produce([observation(prefix, node, fleet.nodes[node]) for node in answered]))
        eventually(lambda: get(url + "/api/summary")[1]["missing_ends"] == 15, 60, "five missing ends reconciled")
        time.sleep(2.5)  # past the scan cache
        stats = get(url + "/api/operations/stats")[1]
        assert stats["operations"]["baremetal.node.provision_set"]["reconciled"] == 5
        dom = headless(tmp_path, "--dump-dom", url + "/?refresh=600")
        page = Page()
        page.feed(dom.stdout)
        for operation, row in stats["operations"].items():
            assert int(page.by_k[f"reconciled:{operation}"]) == row["reconciled"], operation
            assert int(page.by_k[f"count:{operation}"]) == row["count"], operation
        assert int(page.by_id["missing-total"]) == 15

        SCREENSHOT.parent.mkdir(exist_ok=True)
        shot = headless(tmp_path, f"--screenshot={SCREENSHOT}", "--window-size=1280,1100", url + "/?refresh=600")
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 20_000
        print(f"dashboard screenshot: {SCREENSHOT}")
    finally:
        for w in workers:
            w.stop()
