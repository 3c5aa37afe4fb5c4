"""Schema evolution is BACKWARD, as the registry's rule for our subjects: the current `avro/*.avsc`
must read records written with every released version of it. The released versions are stored in
tests/fixtures/avro_released/<version>/ (copy avro/ there at each release): a change that cannot read
them (a field added without a default, a type changed) fails here before a registry refuses it.

Records are read the way the worker reads an old writer's id: codec's own resolution path."""
from __future__ import annotations

import io
from pathlib import Path

import fastavro
import orjson
import pytest

from pipeline import codec
from tests.support.avro_samples import samples

RELEASED = Path(__file__).resolve().parents[1] / "fixtures" / "avro_released"
OLD = sorted(RELEASED.glob("*/*.avsc"))


def unreadable(old_text: str, current_text: str) -> str | None:
    """Why records written with `old_text` cannot be read with `current_text`, or None."""
    old = codec.parse_writer(old_text, "released")
    current = codec.parse_writer(current_text, "current")
    for record in samples(orjson.loads(old_text)):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, old.parsed, record)
        try:
            codec._read(current, out.getvalue(), writer=old, start=0)
        except codec.CodecError as exc:
            return exc.reason
    return None


def test_every_schema_has_a_released_version():
    assert {p.stem for p in codec.avro_dir().glob("*.avsc")} <= {p.stem for p in OLD}


@pytest.mark.parametrize("old", OLD, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_current_schema_reads_records_of_a_released_version(old: Path):
    current = codec.avro_dir() / old.name
    assert current.is_file(), f"{old.name} was released and must stay (its subject has readers)"
    assert unreadable(old.read_text(), current.read_text()) is None


def _changed(name: str, change) -> str:
    schema = orjson.loads((codec.avro_dir() / name).read_bytes())
    change(schema["fields"])
    return orjson.dumps(schema).decode()


@pytest.mark.parametrize("change", [
    lambda fields: fields.append({"name": "added_without_default", "type": "string"}),
    lambda fields: fields[0].update(type="long"),  # a string field becomes a long
], ids=["field added without default", "type changed"])
def test_an_incompatible_change_is_caught(change):
    current = (codec.avro_dir() / "operation.avsc").read_text()
    reason = unreadable(current, _changed("operation.avsc", change))
    assert reason is not None and "\n" not in reason


def test_compatible_changes_pass():
    current = (codec.avro_dir() / "operation.avsc").read_text()
    added = _changed("operation.avsc", lambda f: f.append({"name": "zone", "type": ["null", "string"], "default": None}))
    removed = _changed("operation.avsc", lambda f: f.pop())  # BACKWARD: a reader may drop a field
    assert unreadable(current, added) is None and unreadable(current, removed) is None
