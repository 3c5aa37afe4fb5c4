"""The simulator's own stand-in for Ironic's and Glance's read APIs (``--api-port``): the fleet knows
its true state, including what its lost notifications would have said, so `pipeline reconcile`
pointed here (the demo does) reconciles the simulated losses live. It is the simulator's, not a
cloud's: it answers only the reads the reconciler makes, from the fleet's records, without
authentication, and says so in its version documents and its log line.

It runs in the simulator's event loop (aiohttp), between the fleet's steps, so an answer never
shows a record half-way through a change.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .model import Image, Node, Task

__all__ = ["serve"]

LABEL = "pipeline simulate: the simulated fleet's state, not a real cloud"
_NODE_FIELDS = ("uuid", "name", "power_state", "target_power_state", "provision_state", "target_provision_state",
                "maintenance", "maintenance_reason", "last_error", "provision_updated_at", "updated_at",
                "created_at")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def node_answer(node: Node, fields: Iterable[str] = _NODE_FIELDS) -> dict:
    return {f: _iso(getattr(node, f, None)) for f in fields}


def image_answer(image: Image) -> dict:
    return {"id": image.id, "name": image.name, "status": image.status, "size": image.size,
            "checksum": image.checksum, "created_at": _iso(image.created_at), "updated_at": _iso(image.updated_at)}


def task_answer(task: Task) -> dict:
    return {"id": task.id, "type": task.type, "status": task.status, "message": "",
            "created_at": _iso(task.created_at), "updated_at": _iso(task.updated_at)}


async def serve(fleet: Any, port: int, host: str = "127.0.0.1") -> Any:
    """Start answering on `host:port`; returns the aiohttp runner (``await runner.cleanup()``)."""
    from aiohttp import web

    def base(request: web.Request) -> str:
        return f"http://{request.host}"

    async def ironic_version(request: web.Request) -> web.Response:
        here = f"{base(request)}/v1/"
        version = {"id": "v1", "links": [{"href": here, "rel": "self"}], "status": "CURRENT",
                   "min_version": "1.1", "version": "1.99"}
        return web.json_response({**version, "version": version, "description": LABEL})

    async def glance_versions(request: web.Request) -> web.Response:
        return web.json_response({"versions": [{"id": "v2.16", "status": "CURRENT", "description": LABEL,
                                                "links": [{"href": f"{base(request)}/v2/", "rel": "self"}]}]})

    def nodes_by_id() -> dict[str, Node]:
        return {n.uuid: n for n in fleet.nodes}

    async def node(request: web.Request) -> web.Response:
        found = nodes_by_id().get(request.match_info["id"])
        if found is None:
            return web.json_response({"error_message": "Node could not be found."}, status=404)
        return web.json_response(node_answer(found))

    async def nodes(request: web.Request) -> web.Response:
        fields = [f for f in request.query.get("fields", ",".join(_NODE_FIELDS)).split(",") if f]
        limit = max(1, min(int(request.query.get("limit", "1000")), 1000))
        marker = request.query.get("marker")
        listed = sorted(fleet.nodes, key=lambda n: n.uuid)
        if marker:
            listed = [n for n in listed if n.uuid > marker]
        page = listed[:limit]
        body: dict[str, Any] = {"nodes": [node_answer(n, fields) for n in page]}
        if len(listed) > limit:
            body["next"] = f"{base(request)}/v1/nodes?limit={limit}&marker={page[-1].uuid}"
        return web.json_response(body)

    async def image(request: web.Request) -> web.Response:
        found = next((i for i in fleet.images if i.id == request.match_info["id"]), None)
        if found is None:
            return web.json_response({"message": "No image found"}, status=404)
        return web.json_response(image_answer(found))

    async def task(request: web.Request) -> web.Response:
        found = fleet.tasks.get(request.match_info["id"])
        if found is None:
            return web.json_response({"message": "No task found"}, status=404)
        return web.json_response(task_answer(found))

    app = web.Application()
    app.router.add_get("/", glance_versions)
    app.router.add_get("/v1", ironic_version)
    app.router.add_get("/v1/", ironic_version)
    app.router.add_get("/v1/nodes", nodes)
    app.router.add_get("/v1/nodes/{id}", node)
    app.router.add_get("/v2", glance_versions)
    app.router.add_get("/v2/", glance_versions)
    app.router.add_get("/v2/images/{id}", image)
    app.router.add_get("/v2/tasks/{id}", task)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"simulate: answering as Ironic's and Glance's read APIs on http://{host}:{port} ({LABEL})",
          file=sys.stderr, flush=True)
    return runner
