"""A bearer token guards `/` and `/api/*` when one is configured (here from a file, the way a
Kubernetes Secret is mounted); probes and `/metrics` stay open, and workers forward it to each other."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from tests.support.eventually import eventually
from tests.support.ports import free_port
from tests.support.web_traffic import WorkerProcess, get, mixed_fleet, produce


def _get_with(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
def test_token_required_on_views_not_on_probes(tmp_path: Path, unique: str) -> None:
    token = f"tok-{unique}-secret"
    (tmp_path / "token").write_text(token + "\n")
    prefix = f"tok{unique}."
    fleet, _ = mixed_fleet(prefix, nodes=20)
    env = {"WEB_TOKEN_FILE": str(tmp_path / "token")}
    workers = [WorkerProcess(tmp_path, f"tok-{unique}", prefix, free_port(), name=f"w{i}").start(env) for i in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()  # the workers create the relay topics; produce after that
        asyncio.run(produce(fleet.records))
        base = workers[0].url
        node = next(iter(fleet.nodes))
        eventually(lambda: _get_with(f"{base}/api/nodes/{node}", token) == 200, 60, f"node {node} known",
                   interval=0.3)
        for path in ("/", "/api/nodes", f"/api/nodes/{node}", "/api/alerts", "/api/operations/stats"):
            status, body, headers = get(base + path)
            assert status == 401, (path, status)
            assert "bearer" in body["error"].lower() and "Bearer" in headers.get("WWW-Authenticate", "")
            assert _get_with(base + path, "not-the-token") == 401
            assert _get_with(base + path, token) == 200, path
        assert get(base + f"/?token={token}")[0] == 200  # a browser opening the dashboard
        for path in ("/healthz", "/readyz", "/metrics"):
            assert get(base + path)[0] == 200, path
        # every node answers from either worker: the forwarded hop carries the token too
        for worker in workers:
            for node in fleet.nodes:
                assert _get_with(f"{worker.url}/api/nodes/{node}", token) == 200, node
        for worker in workers:
            assert token not in worker.log_tail(400)
    finally:
        for worker in workers:
            worker.stop()
