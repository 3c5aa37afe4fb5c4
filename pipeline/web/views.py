"""The worker's read-only web surface: registration of the views on the faust app.

`register(app, source, observations)` is called once by `pipeline worker` when it builds the app. It
mounts only our paths (faust's built-in `/table`, `/router`, statistics and index pages are dropped:
they expose table data and topology, and the index would take `/`), a middleware that turns every
error, including unknown paths and methods, into a JSON body, and the Prometheus monitor.

A node is answered by the worker that owns its key (`peers.Peers`, proxied once, with a header that
stops a second hop); fleet views ask every member for its own active partitions and merge the answers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import time
from typing import Any

import orjson
from aiohttp import ClientError
from aiohttp import web as aioweb
from yarl import URL

from pipeline.web import queries
from pipeline.web.metrics import (
    CONTENT_TYPE as METRICS_CONTENT_TYPE,
)
from pipeline.web.metrics import (
    PipelineCollector,
    WorkerFigures,
    consumer_lag,
    new_registry,
    render,
)
from pipeline.web.observe import Observations
from pipeline.web.peers import Peers, ident
from pipeline.web.queries import BadRequest
from pipeline.web.sketch import DurationSketch, merged

log = logging.getLogger(__name__)

SCOPE_HEADER = "X-Pipeline-Scope"  # "local": answer for this worker's partitions only (a peer asks)
ROUTED_HEADER = "X-Pipeline-Routed"  # the request was already routed to the key's owner
MAX_REQUEST_LINE = 65536
STATIC = Path(__file__).with_name("static")


@dataclass
class WebSource:
    """What the stream agents keep, as the views read it. Callables read local data only."""

    table: Any  # the faust table keyed by node UUID bytes; routes GET /api/nodes/{uuid}
    node: Callable[[str], dict | None]  # a node's state and open operations, None if unknown here
    nodes: Callable[[], Iterable[dict]]  # node states of this worker's active partitions
    open_operations: Callable[[], Iterable[dict]]  # open operations of this worker's active partitions
    loss: Callable[[], Mapping[str, Mapping[str, float]]]  # publisher -> {started, ended, missing, ...}
    source_topics: Iterable[str] | None = None  # for consumer lag; None: every active non-changelog topic
    expand: Callable[[dict], dict] = lambda node: node  # a listed node -> its full record (nodes() may be light)
    refresh: Callable[[], Awaitable[None]] | None = None  # brings nodes()/open_operations() up to date
    newest_events: Callable[[], Mapping[str, float]] = dict  # relay topic -> newest event time read (epoch s)
    lanes: Callable[[], Mapping[tuple[str, int], int]] = dict  # (topic, partition) -> watermark µs, active lanes
    agent: Callable[[], Mapping[str, Any]] = dict  # stalled, reason, last_progress (epoch s): liveness.Progress.report


def json_response(value: Any, status: int = 200) -> aioweb.Response:
    return aioweb.Response(
        body=orjson.dumps(value, default=str),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> aioweb.Response:
    response = json_response(queries.error_body(status, reason), status)
    if headers:
        response.headers.update(headers)
    return response


Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


@aioweb.middleware
async def json_errors(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
    """Every refusal is JSON with a reason; nothing leaks a traceback."""
    try:
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    except BadRequest as exc:
        return error_response(400, exc.reason)
    except aioweb.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, f"method {request.method} not allowed; allowed: {allowed}", {"Allow": allowed})
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = "no such path" if exc.status == 404 else exc.reason
        return error_response(exc.status, reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("web view failed: %s %s", request.method, request.path)
        return error_response(500, "internal error (logged by the worker)")


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scraping never need the token


def bearer_guard(token: str | None) -> Callable[..., Awaitable[aioweb.StreamResponse]]:
    """With a token set, `/` and `/api/*` need `Authorization: Bearer <token>`. A browser cannot send
    that header when it opens the dashboard, so `/` also takes `?token=`; its script then sends
    the header with every API call."""
    expected = f"Bearer {token}".encode() if token else b""

    @aioweb.middleware
    async def guard(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        if not expected or request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not given and request.path == "/" and "token" in request.query:
            given = f"Bearer {request.query['token']}"
        if hmac.compare_digest(given.encode(), expected):
            return await handler(request)
        reason = "wrong bearer token" if given else "this view needs a bearer token (Authorization: Bearer ...)"
        return error_response(401, reason, {"WWW-Authenticate": 'Bearer realm="pipeline"'})

    return guard


def _strip_faust_pages(app: Any) -> None:
    """Drop faust's built-in blueprints before the server starts: /table serves table data, /router and
    the statistics pages the topology, and the index would take `/`. Routing across members does not
    use them (it reads the assignment directly), so nothing here needs them."""
    manager = app.web.blueprints
    if manager.applied:
        raise RuntimeError("pipeline.web.register must run before the web server starts")
    manager._enabled[:] = []


class WebViews:
    def __init__(self, app: Any, source: WebSource, observations: Observations) -> None:
        self.app = app
        self.source = source
        self.observations = observations
        self.peers = Peers(app)
        self.extra_counters: Callable[[], Iterable[tuple[str, str, float]]] = lambda: ()
        self.history: Any = None  # the HistoryLoader, when the worker's output topics are known
        self.collector = PipelineCollector(observations, self.figures)
        self.registry = new_registry(app, self.collector)
        self.dashboard = (STATIC / "dashboard.html").read_bytes()

    # ---- readiness ---------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        app = self.app
        if getattr(app, "in_recovery", False):
            return False, "recovering tables"
        if getattr(app, "rebalancing", False):
            return False, "rebalancing"
        try:
            actives = app.assignor.assigned_actives()
        except Exception:
            actives = set()
        if not actives:
            return False, "no partitions assigned"
        try:
            if not app.tables.recovery.completed.is_set():
                return False, "recovering tables"
        except AttributeError:
            pass
        return True, "ready"

    # ---- local figures -----------------------------------------------------------------------------

    async def refreshed(self) -> None:
        if self.source.refresh is not None:
            await self.source.refresh()

    def open_operation_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.source.open_operations():
            name = str(op.get("operation"))
            counts[name] = counts.get(name, 0) + 1
        return counts

    def lag(self) -> dict[tuple[str, int], int]:
        return consumer_lag(self.app, self.source.source_topics)

    def figures(self) -> WorkerFigures:
        """What /metrics reads at scrape time (after `refreshed`)."""
        return WorkerFigures(
            nodes=self.source.nodes(),
            open_operations=self.source.open_operations(),
            consumer_lag=self.lag(),
            newest_event=self.source.newest_events(),
            loss=self.source.loss(),
            counters=self.extra_counters(),
            lanes=self.source.lanes(),
            agent=self.source.agent(),
            now=time(),
        )

    # ---- fan-out -----------------------------------------------------------------------------------

    async def gather(self, request: aioweb.Request, local: dict) -> tuple[list[dict], dict]:
        """This worker's answer plus every other member's answer to the same request (local scope)."""
        if request.headers.get(SCOPE_HEADER) == "local":
            return [local], {}
        others = self.peers.others()

        async def ask(url: str) -> dict:
            status, body, _ = await self.peers.get(url, request.rel_url, {SCOPE_HEADER: "local"})
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            return orjson.loads(body)

        results = await asyncio.gather(*(ask(url) for url in others), return_exceptions=True)
        answers = [local]
        failed: dict[str, str] = {}
        for url, result in zip(others, results):
            if isinstance(result, BaseException):
                failed[url] = str(result) or type(result).__name__
            else:
                answers.append(result)
        return answers, failed

    @staticmethod
    def _workers(answers: list[dict], failed: dict) -> dict:
        return {"workers": len(answers), "unreachable": sorted(failed), "partial": bool(failed)}

    # ---- handlers ----------------------------------------------------------------------------------

    async def node(self, request: aioweb.Request) -> aioweb.StreamResponse:
        uuid = queries.parse_uuid(request.match_info["uuid"])
        queries.parse_no_params(_multi(request), request.query_string)
        key = uuid.encode()
        changelog = self.source.table.changelog_topic.get_topic_name()
        owner = self.peers.owner(changelog, key)
        if owner is None:
            return error_response(503, "no partition assignment yet; retry shortly")
        mine = ident(URL(owner)) == self.peers.own()
        if not mine:
            if request.headers.get(ROUTED_HEADER):
                return error_response(503, "the node's partition is moving between workers; retry shortly")
            try:
                status, body, content_type = await self.peers.get(owner, request.rel_url, {ROUTED_HEADER: "1"})
            except (TimeoutError, ClientError) as exc:
                reason = str(exc) or type(exc).__name__
                return error_response(503, f"the worker owning this node ({owner}) did not answer: {reason}")
            response = aioweb.Response(body=body, status=status, content_type=content_type or "application/json")
            response.headers["X-Pipeline-Answered-By"] = owner
            return response
        state = self.source.node(uuid)
        if state is None:
            return error_response(404, f"unknown node {uuid}")
        response = json_response(state)
        response.headers["X-Pipeline-Answered-By"] = str(self.app.conf.canonical_url)
        return response

    async def nodes(self, request: aioweb.Request) -> aioweb.StreamResponse:
        q = queries.parse_node_query(_multi(request), request.query_string)
        await self.refreshed()
        local = queries.select_nodes(self.source.nodes(), q)
        local["nodes"] = [self.source.expand(n) for n in local["nodes"]]
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        return json_response({**queries.merge_node_answers(answers, q), **self._workers(answers, failed)})

    async def open_operations(self, request: aioweb.Request) -> aioweb.StreamResponse:
        q = queries.parse_open_query(_multi(request), request.query_string)
        await self.refreshed()
        limit = q.limit
        operations = [o for o in self.source.open_operations() if queries.open_matches(o, q)]
        local = {"operations": queries.sort_open_operations(operations, limit), "total": len(operations)}
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        merged_ops = queries.sort_open_operations((o for a in answers for o in a["operations"]), limit)
        total = sum(int(a.get("total", 0)) for a in answers)
        return json_response({"operations": merged_ops, "count": len(merged_ops), "total": total, **self._workers(answers, failed)})

    async def stats(self, request: aioweb.Request) -> aioweb.StreamResponse:
        queries.parse_no_params(_multi(request), request.query_string)
        sketch = self.observations.durations
        local = {"sketch": sketch.to_json()}
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        total = merged((DurationSketch.from_json(a["sketch"]) for a in answers), sketch.window_s, sketch.slice_s, sketch.accuracy)
        return json_response(
            {
                "operations": total.stats(),
                "window_s": total.window_s,
                "window_end": total.watermark,
                **self._workers(answers, failed),
            }
        )

    async def alerts(self, request: aioweb.Request) -> aioweb.StreamResponse:
        q = queries.parse_alert_query(_multi(request), request.query_string)
        local = {"alerts": queries.sort_alerts(self.observations.recent_alerts, q)}
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        alerts = queries.sort_alerts((a for answer in answers for a in answer["alerts"]), q)
        return json_response({"alerts": alerts, "count": len(alerts), **self._workers(answers, failed)})

    async def summary(self, request: aioweb.Request) -> aioweb.StreamResponse:
        queries.parse_no_params(_multi(request), request.query_string)
        await self.refreshed()
        local = {
            "nodes": queries.state_counts(self.source.nodes()),
            "loss": {p: dict(row) for p, row in self.source.loss().items()},
            "open_operations": self.open_operation_counts(),
            "missing_ends": sum(o.get("missing_end_raised_at") is not None for o in self.source.open_operations()),
            "alerts": dict(self.observations.alerts_by_type),
            "events": sum(self.observations.events_by_type.values()),
        }
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        open_ops: dict[str, int] = {}
        alerts: dict[str, int] = {}
        for answer in answers:
            for name, n in answer["open_operations"].items():
                open_ops[name] = open_ops.get(name, 0) + n
            for name, n in answer["alerts"].items():
                alerts[name] = alerts.get(name, 0) + n
        return json_response(
            {
                "nodes": queries.merge_counts(a["nodes"] for a in answers),
                "loss": queries.merge_loss(a["loss"] for a in answers),
                "open_operations": dict(sorted(open_ops.items())),
                "missing_ends": sum(int(a.get("missing_ends", 0)) for a in answers),
                "alerts": dict(sorted(alerts.items())),
                "events": sum(int(a.get("events", 0)) for a in answers),
                "now": time(),
                **self._workers(answers, failed),
            }
        )

    async def lanes(self, request: aioweb.Request) -> aioweb.StreamResponse:
        """Each lane's watermark and its age (README, The clock), oldest first."""
        queries.parse_no_params(_multi(request), request.query_string)
        now = time()
        local = {"lanes": queries.lane_rows(self.source.lanes(), now)}
        answers, failed = await self.gather(request, local)
        if request.headers.get(SCOPE_HEADER) == "local":
            return json_response(local)
        lanes = queries.sort_lanes(lane for answer in answers for lane in answer["lanes"])
        ages = [lane["age_s"] for lane in lanes if lane["age_s"] is not None]
        return json_response({"lanes": lanes, "oldest_age_s": max(ages, default=None), "now": now,
                              **self._workers(answers, failed)})

    async def healthz(self, request: aioweb.Request) -> aioweb.StreamResponse:
        agent = self.source.agent()  # the liveness probe fails once the agent stalls (streams/liveness.py)
        if agent.get("stalled"):
            return json_response({"status": "stalled", "reason": agent.get("reason", "")}, 503)
        return json_response({"status": "ok"})

    async def readyz(self, request: aioweb.Request) -> aioweb.StreamResponse:
        ready, reason = self.readiness()
        return json_response({"ready": ready, "reason": reason}, 200 if ready else 503)

    async def metrics(self, request: aioweb.Request) -> aioweb.StreamResponse:
        queries.parse_no_params(_multi(request), request.query_string)
        await self.refreshed()
        return aioweb.Response(body=render(self.registry), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def index(self, request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.Response(
            body=self.dashboard,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-store",
                # the page loads nothing from elsewhere, and says so to the browser
                "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            },
        )

    async def close(self) -> None:
        if self.history is not None:
            for task in list(self.history.tasks.values()):
                task.cancel()
        if self.peers.session is not None:
            await self.peers.session.close()


def _multi(request: aioweb.Request) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in request.query.items():
        values.setdefault(name, []).append(value)
    return values


ROUTES: tuple[tuple[str, str], ...] = (
    ("/", "index"),
    ("/healthz", "healthz"),
    ("/readyz", "readyz"),
    ("/metrics", "metrics"),
    ("/api/nodes", "nodes"),
    ("/api/nodes/{uuid}", "node"),
    ("/api/operations/open", "open_operations"),
    ("/api/operations/stats", "stats"),
    ("/api/alerts", "alerts"),
    ("/api/summary", "summary"),
    ("/api/lanes", "lanes"),
)


def register(app: Any, source: WebSource, observations: Observations, token: str | None = None) -> WebViews:
    """Mount the views on `app` (before the worker starts). Returns the views, e.g. for tests."""
    from faust import web as faust_web

    views = WebViews(app, source, observations)
    views.peers.token = token
    _strip_faust_pages(app)
    app.web.web_app.middlewares.append(json_errors)
    app.web.web_app.middlewares.append(bearer_guard(token))
    # aiohttp's parser refuses a request line over 8 KiB with a plain-text 400 before any middleware
    # runs; up to 64 KiB the request reaches us and gets the JSON reason. Beyond that the parser's
    # plain 400 stands (no traceback either way).
    handler_args = dict(app.web.web_app._handler_args or {})
    handler_args.setdefault("max_line_size", MAX_REQUEST_LINE)
    handler_args.setdefault("max_field_size", MAX_REQUEST_LINE)
    app.web.web_app._handler_args = handler_args
    for path, name in ROUTES:
        handler = getattr(views, name)

        async def get(self: faust_web.View, request: aioweb.Request, _handler=handler, **match: str) -> Any:
            return await _handler(request)

        view = type(f"Pipeline_{name}", (faust_web.View,), {"get": get, "__doc__": handler.__doc__})
        app.page(path, name=f"pipeline-{name}")(view)

    async def _close(*_: Any) -> None:
        await views.close()

    app.web.web_app.on_cleanup.append(_close)
    return views
