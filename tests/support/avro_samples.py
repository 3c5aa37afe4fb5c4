"""Records for any Avro record schema, for tests that write with one schema version and read with
another: one record per union branch, so every branch of every field is written at least once."""
from __future__ import annotations

from typing import Any

_PRIMITIVES = {"null": None, "boolean": True, "int": 7, "long": 1_700_000_000_000_000, "float": 0.5,
               "double": 2.5, "bytes": b"\x00\xc3", "string": "text"}


def _value(node: Any, branch: int) -> Any:
    if isinstance(node, list):  # a union: pick one branch, by turns
        return _value(node[branch % len(node)], 0)
    if isinstance(node, str):
        return _PRIMITIVES[node]
    kind = node["type"]
    if kind == "record":
        return {f["name"]: _value(f["type"], branch) for f in node["fields"]}
    if kind == "enum":
        return node["symbols"][branch % len(node["symbols"])]
    if kind == "array":
        return [_value(node["items"], branch)]
    if kind == "map":
        return {"k": _value(node["values"], branch)}
    if kind == "fixed":
        return b"\x01" * node["size"]
    return _value(kind, branch)  # {"type": "long", "logicalType": ...}


def samples(schema: dict) -> list[dict]:
    widest = max((len(f["type"]) for f in schema["fields"] if isinstance(f["type"], list)), default=1)
    return [_value(schema, branch) for branch in range(widest)]
