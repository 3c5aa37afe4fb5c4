"""What the reconciler asks about and when (pipeline/reconcile/jobs.py), and how it reads what an HTTP
server answers through openstacksdk (pipeline/reconcile/api.py): the statuses of a failing API are
served by a small local HTTP server of this test, not by Ironic (the real Ironic is in
tests/integration/test_reconcile_ironic.py)."""
from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import observed
from pipeline.config import ConfigError
from pipeline.reconcile import api as api_mod
from pipeline.reconcile import jobs
from tests.support import scripted as s
from tests.support.openstack_service import send_reply

NODE = str(uuid.uuid4())
T = 1_800_000_000.0


def alert(kind: str, **kw) -> dict:
    return {"alert_id": "a-1", "kind": kind, "resource_uuid": NODE, "operation": "baremetal.node.power_set",
            "started_at": s.at(0), **kw}


def test_a_missing_end_asks_about_its_resource_s_family() -> None:
    job = jobs.from_alert(alert("missing_end"), T, 3600.0, ("pipeline.alerts", 2, 17))
    assert (job.about, job.family, job.resource, job.operation, job.origin) == (
        "a-1", "baremetal.node", NODE, "baremetal.node.power_set", ("pipeline.alerts", 2, 17))
    assert job.started_us == observed.micros_of(s.at(0))
    image = jobs.from_alert(alert("missing_end", operation="image.upload"), T, 3600.0)
    task = jobs.from_alert(alert("missing_end", operation="task"), T, 3600.0)
    assert (image.family, task.family) == ("image", "task")


def test_a_stuck_state_asks_about_the_node() -> None:
    job = jobs.from_alert(alert("stuck_state", operation=None), T, 3600.0)
    assert (job.family, job.operation, job.started_us) == ("baremetal.node", None, None)


@pytest.mark.parametrize("changed", [
    {"kind": "orphan_end"}, {"kind": "resolved_late"}, {"kind": "reconciled"},
    {"operation": "baremetal.port.create"},  # no API answers for ports here
    {"resource_uuid": "not-a-uuid"},
])
def test_what_is_not_asked(changed) -> None:
    assert jobs.from_alert(alert("missing_end", **{k: v for k, v in changed.items() if k != "kind"}) | (
        {"kind": changed["kind"]} if "kind" in changed else {}), T, 3600.0) is None


def test_alert_times_read_as_avro_json_or_datetimes() -> None:
    us = observed.micros_of(s.at(0))
    for value in (us, s.at(0), "2026-11-22T00:00:00.000000Z"):
        assert jobs.from_alert(alert("missing_end", started_at=value), T, 3600.0).started_us == us


def test_a_job_gives_up_asking_a_running_operation_after_the_limit() -> None:
    started = s.at(0).timestamp()
    assert jobs.from_alert(alert("missing_end"), started + 10, 600.0).give_up_at == started + 600
    assert jobs.from_alert(alert("missing_end"), started + 7200, 600.0).give_up_at == started + 7200


def test_resources_lines() -> None:
    assert jobs.from_line(f"{NODE}\n", T).family == "baremetal.node"
    assert jobs.from_line(f"image {NODE}  # the golden image", T).family == "image"
    assert jobs.from_line("   # nothing", T) is None
    with pytest.raises(ValueError, match="expected UUID or FAMILY UUID"):
        jobs.from_line(f"baremetal.port {NODE}", T)
    with pytest.raises(ValueError, match="is not a UUID"):
        jobs.from_line("node-7", T)


def answer(**fields) -> observed.Observation:
    base = {"uuid": NODE, "power_state": "power on", "target_power_state": None, "provision_state": "active",
            "target_provision_state": None, "updated_at": s.at(50).isoformat()}
    ev = observed.observation("baremetal.node", NODE, {**base, **fields}, observed_at=s.at(60), about="a-1",
                              source="ironic")
    return observed.read(ev)


def test_settled_when_finished_gone_or_no_longer_stuck() -> None:
    op = jobs.from_alert(alert("missing_end"), T, 3600.0)
    now = observed.micros_of(s.at(60))
    assert jobs.settled(op, answer(), now)
    assert not jobs.settled(op, answer(target_power_state="power on"), now)
    assert jobs.settled(op, observed.read(observed.observation(
        "baremetal.node", NODE, None, observed_at=s.at(60), about="a-1", source="ironic")), now)
    stuck = jobs.from_alert(alert("stuck_state", operation=None), T, 3600.0)
    assert not jobs.settled(stuck, answer(provision_state="deploying", target_provision_state="active"), now)
    assert jobs.settled(stuck, answer(provision_state="deploy failed"), now)


def test_reconciled_or_late_ends_close_a_job() -> None:
    job = jobs.from_alert(alert("missing_end"), T, 3600.0)
    assert jobs.closes({"kind": "reconciled", "resolves": "a-1"}, job)
    assert not jobs.closes({"kind": "reconciled", "resolves": "a-2"}, job)
    assert jobs.closes({"kind": "resolved_late", "resource_uuid": NODE, "operation": "baremetal.node.power_set"}, job)
    assert not jobs.closes({"kind": "resolved_late", "resource_uuid": NODE, "operation": "task"}, job)


def test_the_wait_doubles_up_to_the_ceiling_with_jitter() -> None:
    waits = [jobs.next_delay(n, 1.0, 10.0, jitter=0) for n in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert all(0.8 <= jobs.next_delay(1, 1.0, 10.0) <= 1.2 for _ in range(50))


# --- the API shell against an HTTP server ------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    replies: list[tuple[int, dict, bytes]] = []  # served in order, the last one repeated
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") == "/v1":  # version discovery, as Ironic answers it (keystoneauth asks first)
            here = f"http://{self.headers['Host']}/v1/"
            status, headers, body = _json({"id": "v1", "links": [{"href": here, "rel": "self"}], "version": {
                "id": "v1", "links": [{"href": here, "rel": "self"}], "status": "CURRENT", "min_version": "1.1",
                "version": "1.99"}})
        else:
            self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            status, headers, body = self.replies[0] if len(self.replies) == 1 else self.replies.pop(0)
        send_reply(self, status, headers, body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _api(url: str, tmp_path: Path) -> api_mod.Api:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  t:\n    auth_type: none\n    baremetal_endpoint_override: {url}/v1\n")
    return api_mod.Api(api_mod.connect("t", str(clouds), 5.0), 5.0)


def _json(body) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.mark.parametrize(("status", "headers", "cause", "retry_after"), [
    (500, {}, "server", None),
    (503, {}, "server", None),
    (401, {}, "denied", None),
    (403, {}, "denied", None),
    (429, {"Retry-After": "7"}, "throttled", 7.0),
    (429, {}, "throttled", None),
    (400, {}, "unexpected", None),
])
def test_a_failed_answer_has_its_cause(server, tmp_path, status, headers, cause, retry_after) -> None:
    _Handler.replies = [(status, {**headers, "Content-Type": "application/json"}, b'{"error": "secret-ish body"}')]
    with pytest.raises(api_mod.Failed) as failed:
        _api(server, tmp_path).get("baremetal.node", NODE)
    assert (failed.value.cause, failed.value.retry_after) == (cause, retry_after)
    assert "secret-ish" not in str(failed.value) and str(status) in failed.value.detail


def test_an_answer_and_a_404(server, tmp_path) -> None:
    _Handler.replies = [_json({"uuid": NODE, "power_state": "power on"}), (404, {}, b"{}")]
    api = _api(server, tmp_path)
    assert api.get("baremetal.node", NODE)["power_state"] == "power on"
    assert api.get("baremetal.node", NODE) is None
    request = _Handler.seen[-1]
    assert request["path"] == f"/v1/nodes/{NODE}" and request["x-openstack-ironic-api-version"] == "1.8"


def test_a_body_that_is_not_json_is_unexpected(server, tmp_path) -> None:
    _Handler.replies = [(200, {"Content-Type": "text/html"}, b"<html>proxy error</html>")]
    with pytest.raises(api_mod.Failed, match="unexpected"):
        _api(server, tmp_path).get("baremetal.node", NODE)


def test_nodes_are_paged_with_a_marker(server, tmp_path) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    _Handler.replies = [_json({"nodes": [{"uuid": a}, {"uuid": b}], "next": "more"}), _json({"nodes": []})]
    api = _api(server, tmp_path)
    page, marker = api.nodes_page(None, 2)
    assert [n["uuid"] for n in page] == [a, b] and marker == b
    assert api.nodes_page(marker, 2) == ([], None)
    assert f"marker={b}" in _Handler.seen[-1]["path"] and "fields=uuid" in _Handler.seen[0]["path"]


def test_an_api_that_does_not_listen_is_unreachable(tmp_path) -> None:
    from tests.support.ports import free_port

    with pytest.raises(api_mod.Failed) as failed:
        _api(f"http://127.0.0.1:{free_port()}", tmp_path).get("baremetal.node", NODE)
    assert failed.value.cause == "unreachable"


def test_a_cloud_that_is_not_there_is_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no cloud to ask"):
        api_mod.connect(None, None, 5.0)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    with pytest.raises(ConfigError, match="'nope'"):
        api_mod.connect("nope", str(clouds), 5.0)
