"""Request validation, filtering and response shaping for the web views. Pure: no faust, no I/O.

Every reason a request is refused is a `BadRequest` with a one-line message; the views turn it into
a JSON 400. Filter values are checked against Ironic's own state names, so a typo is a 400 rather
than an empty (and misleading) fleet view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

# ironic/common/states.py; "none" selects nodes whose state is not known yet.
POWER_STATES: frozenset[str] = frozenset(
    {"power on", "power off", "rebooting", "soft rebooting", "soft power off", "error", "none"}
)
PROVISION_STATES: frozenset[str] = frozenset(
    {
        "enroll", "verifying", "manageable", "inspecting", "inspect wait", "inspect failed",
        "available", "deploying", "wait call-back", "deploy failed", "deploy hold", "deploy complete",
        "active", "deleting", "deleted", "cleaning", "clean wait", "clean failed", "clean hold",
        "error", "rebuild", "rescuing", "rescue wait", "rescue failed", "rescue", "unrescuing",
        "unrescue failed", "adopting", "adopt failed", "servicing", "service wait", "service failed",
        "service hold", "none",
    }
)
ALERT_TYPES: tuple[str, ...] = ("missing_end", "resolved_late", "orphan_end", "stuck_state", "reconciled")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_QUERY_CHARS = 2048

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BadRequest(ValueError):
    """A request refused with HTTP 400; `reason` is one line for the JSON body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeQuery:
    power_state: str | None = None
    provision_state: str | None = None
    maintenance: bool | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class AlertQuery:
    type: str | None = None
    limit: int = DEFAULT_LIMIT


def parse_uuid(text: str) -> str:
    """The canonical lower-case form of a node UUID taken from a URL, or BadRequest."""
    candidate = text.strip().lower() if len(text) <= 64 else ""
    if not _UUID.match(candidate):
        shown = text if len(text) <= 64 else text[:61] + "..."
        raise BadRequest(f"not a UUID: {shown!r} (expected 8-4-4-4-12 hexadecimal digits)")
    return candidate


def _single(query: Mapping[str, Sequence[str]], allowed: Iterable[str], query_string: str) -> dict[str, str]:
    """One value per known parameter; unknown or repeated parameters are refused, not ignored."""
    if len(query_string) > MAX_QUERY_CHARS:
        raise BadRequest(f"query string is {len(query_string)} characters long, the limit is {MAX_QUERY_CHARS}")
    allowed = tuple(allowed)
    values: dict[str, str] = {}
    for name, given in query.items():
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name!r}; allowed: {', '.join(allowed) or 'none'}")
        if len(given) != 1:
            raise BadRequest(f"parameter {name!r} given {len(given)} times")
        values[name] = given[0]
    return values


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, not {raw[:20]!r}")
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def _choice(name: str, raw: str | None, allowed: Iterable[str]) -> str | None:
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if value not in allowed:
        raise BadRequest(f"unknown {name} {raw[:40]!r}; allowed: {', '.join(sorted(allowed))}")
    return value


def parse_bool(name: str, raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false, not {raw[:20]!r}")


def parse_node_query(query: Mapping[str, Sequence[str]], query_string: str = "") -> NodeQuery:
    values = _single(query, ("power_state", "provision_state", "maintenance", "limit"), query_string)
    return NodeQuery(
        power_state=_choice("power_state", values.get("power_state"), POWER_STATES),
        provision_state=_choice("provision_state", values.get("provision_state"), PROVISION_STATES),
        maintenance=parse_bool("maintenance", values.get("maintenance")),
        limit=parse_limit(values.get("limit")),
    )


def parse_alert_query(query: Mapping[str, Sequence[str]], query_string: str = "") -> AlertQuery:
    values = _single(query, ("type", "limit"), query_string)
    return AlertQuery(
        type=_choice("alert type", values.get("type"), ALERT_TYPES),
        limit=parse_limit(values.get("limit")),
    )


@dataclass(frozen=True, slots=True)
class OpenQuery:
    missing_end: bool | None = None  # True: only operations whose missing_end alert was raised
    limit: int = DEFAULT_LIMIT


def parse_open_query(query: Mapping[str, Sequence[str]], query_string: str = "") -> OpenQuery:
    values = _single(query, ("missing_end", "limit"), query_string)
    return OpenQuery(missing_end=parse_bool("missing_end", values.get("missing_end")), limit=parse_limit(values.get("limit")))


def open_matches(operation: Mapping[str, Any], q: OpenQuery) -> bool:
    return q.missing_end is None or (operation.get("missing_end_raised_at") is not None) == q.missing_end


def parse_no_params(query: Mapping[str, Sequence[str]], query_string: str = "") -> None:
    _single(query, (), query_string)


# ---- filtering and shaping --------------------------------------------------------------------------


def _state(value: Any) -> str:
    return "none" if value in (None, "") else str(value).lower()


def node_matches(node: Mapping[str, Any], q: NodeQuery) -> bool:
    if q.power_state is not None and _state(node.get("power_state")) != q.power_state:
        return False
    if q.provision_state is not None and _state(node.get("provision_state")) != q.provision_state:
        return False
    if q.maintenance is not None and bool(node.get("maintenance")) != q.maintenance:
        return False
    return True


def select_nodes(nodes: Iterable[Mapping[str, Any]], q: NodeQuery) -> dict[str, Any]:
    """One worker's answer: the first `limit` matches by UUID and how many matched in all."""
    matched = [n for n in nodes if node_matches(n, q)]
    matched.sort(key=lambda n: str(n.get("uuid", "")))
    return {"nodes": [dict(n) for n in matched[: q.limit]], "matched": len(matched)}


def merge_node_answers(answers: Iterable[Mapping[str, Any]], q: NodeQuery) -> dict[str, Any]:
    """The fleet view from every worker's answer. A node seen twice (a partition that moved while
    the workers answered) is shown once."""
    by_uuid: dict[str, dict] = {}
    matched = 0
    for answer in answers:
        matched += int(answer.get("matched", 0))
        for node in answer.get("nodes", ()):
            by_uuid.setdefault(str(node.get("uuid", "")), dict(node))
    nodes = [by_uuid[k] for k in sorted(by_uuid)][: q.limit]
    return {"nodes": nodes, "count": len(nodes), "matched": matched, "limit": q.limit}


def state_counts(nodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    power: dict[str, int] = {}
    provision: dict[str, int] = {}
    maintenance = total = 0
    for node in nodes:
        total += 1
        p = _state(node.get("power_state"))
        power[p] = power.get(p, 0) + 1
        s = _state(node.get("provision_state"))
        provision[s] = provision.get(s, 0) + 1
        maintenance += bool(node.get("maintenance"))
    return {"total": total, "power_state": power, "provision_state": provision, "maintenance": maintenance}


def merge_counts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"total": 0, "power_state": {}, "provision_state": {}, "maintenance": 0}
    for part in parts:
        merged["total"] += int(part.get("total", 0))
        merged["maintenance"] += int(part.get("maintenance", 0))
        for field in ("power_state", "provision_state"):
            for state, n in part.get(field, {}).items():
                merged[field][state] = merged[field].get(state, 0) + int(n)
    for field in ("power_state", "provision_state"):
        merged[field] = dict(sorted(merged[field].items(), key=lambda kv: (-kv[1], kv[0])))
    return merged


def merge_loss(parts: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Loss per publisher summed over workers; `rate` = missing ends / operations started."""
    merged: dict[str, dict[str, float]] = {}
    for part in parts:
        for publisher, row in part.items():
            into = merged.setdefault(publisher, {})
            for name, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "rate":
                    into[name] = into.get(name, 0) + value
    out: dict[str, dict[str, Any]] = {}
    for publisher in sorted(merged):
        row = dict(merged[publisher])
        started = row.get("started", 0)
        row["rate"] = (row.get("missing", 0) / started) if started else 0.0
        out[publisher] = row
    return out


def sort_alerts(alerts: Iterable[Mapping[str, Any]], q: AlertQuery) -> list[dict[str, Any]]:
    """Newest first, filtered by type, at most `limit`; one copy of an alert seen by two workers."""
    seen: dict[Any, dict] = {}
    for alert in alerts:
        if q.type is not None and alert.get("kind") != q.type:
            continue
        key = alert.get("alert_id") or (alert.get("kind"), alert.get("resource_uuid"), alert.get("operation"), alert.get("raised_at"))
        seen.setdefault(key, dict(alert))
    ordered = sorted(seen.values(), key=lambda a: str(a.get("raised_at") or ""), reverse=True)
    return ordered[: q.limit]


def sort_open_operations(operations: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Oldest first: the operation open the longest is the one an operator looks at."""
    ordered = sorted((dict(o) for o in operations), key=lambda o: (str(o.get("started_at") or ""), str(o.get("resource_uuid"))))
    return ordered[:limit]


def lane_rows(watermarks: Mapping[tuple[str, int], int], now: float) -> list[dict[str, Any]]:
    """Each lane's watermark (µs since the epoch; 0: none yet) as RFC 3339 and its age in seconds,
    oldest first (a lane without a watermark first of all)."""
    rows = []
    for (topic, partition), mark in watermarks.items():
        seconds = mark / 1_000_000 if mark > 0 else None
        rows.append({"topic": topic, "partition": partition,
                     "watermark": _rfc3339(seconds) if seconds is not None else None,
                     "age_s": round(now - seconds, 3) if seconds is not None else None})
    return sort_lanes(rows)


def sort_lanes(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted((dict(r) for r in rows),
                  key=lambda r: (r["age_s"] is not None, -(r["age_s"] or 0.0), r["topic"], r["partition"]))


def _rfc3339(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(status: int, reason: str) -> dict[str, Any]:
    return {"error": reason, "status": status}
