"""Reading the worker's tables: what the web views (and tests) use instead of the raw records.

``rt.resources`` (faust Table, key = resource UUID bytes, value = orjson state record) and
``rt.loss`` (key = ``b"<partition>|<publisher>|<operation>"``, value = orjson counts); iterating a
table shows this worker's partitions only (with ``memory://`` also standby copies).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from . import nodes
from .models import to_datetime

__all__ = [
    "decode",
    "iter_nodes",
    "iter_open_operations",
    "loss_key",
    "loss_totals",
    "node_state",
    "open_operations",
]


def decode(raw: bytes | None) -> dict | None:
    return None if raw is None else orjson.loads(raw)


def node_state(uuid: str, raw: bytes | None) -> dict | None:
    """The node-state record (fields of avro/node_state.avsc, times as datetimes), or None."""
    st = decode(raw)
    if not st or not st.get("node"):
        return None
    return nodes.record(uuid, st["node"])


def open_operations(uuid: str, raw: bytes | None) -> list[dict]:
    """The resource's open operations: started, still waiting for their end."""
    st = decode(raw)
    if not st:
        return []
    return [
        {
            "resource_uuid": uuid,
            "node_uuid": op.get("node"),
            "operation": name,
            "started_at": to_datetime(op["st"]),
            "deadline_at": to_datetime(op["dl"]),
            "start_message_id": op["sm"],
            "publisher_id": op["pub"],
            "missing_end_raised_at": to_datetime(op["al"] or None),
        }
        for name, op in st.get("ops", {}).items()
    ]


def iter_nodes(items: Iterable[tuple[bytes, bytes]]) -> Iterator[dict]:
    """Node-state records of ``rt.resources.items()``."""
    for key, raw in items:
        rec = node_state(key.decode(), raw)
        if rec is not None:
            yield rec


def iter_open_operations(items: Iterable[tuple[bytes, bytes]]) -> Iterator[dict]:
    for key, raw in items:
        yield from open_operations(key.decode(), raw)


def loss_key(partition: int, publisher: str, operation: str) -> bytes:
    return f"{partition}|{publisher}|{operation}".encode()


def loss_totals(items: Iterable[tuple[bytes, bytes]]) -> dict[tuple[str, str], dict[str, int]]:
    """``rt.loss.items()`` summed over partitions: (publisher, operation) -> counts."""
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for key, raw in items:
        _, publisher, operation = key.decode().split("|", 2)
        row = totals.setdefault((publisher, operation), {})
        for what, n in orjson.loads(raw).items():
            row[what] = row.get(what, 0) + n
    return totals


def as_json(record: dict) -> Any:
    """A record with datetimes -> JSON-ready (RFC 3339 text)."""
    return orjson.loads(orjson.dumps(record, option=orjson.OPT_UTC_Z))
