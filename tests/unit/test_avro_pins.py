"""Every Avro schema is pinned by its fingerprint in docs/contracts.md, so a change is deliberate.

Downstream consumers find a record's schema by the fingerprint after `C3 01`; a schema edited by
accident (a field renamed, a default dropped) would leave them with records they cannot resolve."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline import codec

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "docs" / "contracts.md"
PIN = re.compile(r"^\| `avro/(?P<file>[a-z_]+)\.avsc` \|[^|]*\| `(?P<fingerprint>[0-9a-f]{16})` \|$", re.M)


def pinned() -> dict[str, str]:
    return {m["file"]: m["fingerprint"] for m in PIN.finditer(CONTRACTS.read_text())}


def test_every_schema_file_is_pinned() -> None:
    files = {p.stem for p in (ROOT / "avro").glob("*.avsc")}
    assert files == set(pinned()), f"schemas without a pin in docs/contracts.md: {sorted(files - set(pinned()))}"


def test_every_schema_has_its_pinned_fingerprint() -> None:
    changed = {
        name: codec.schema(name).fingerprint.hex()
        for name, fingerprint in pinned().items()
        if codec.schema(name).fingerprint.hex() != fingerprint
    }
    assert not changed, (
        f"Avro schemas changed: {changed} (new fingerprints). If that is deliberate, put the new fingerprint "
        "in docs/contracts.md's schema table and say what changed and why in docs/changelog.md."
    )


def test_the_pin_check_sees_a_change(tmp_path, monkeypatch) -> None:
    """A schema with one more field gets another fingerprint, so the check above cannot pass by accident."""
    for path in (ROOT / "avro").glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    alert = (tmp_path / "alert.avsc").read_text()
    (tmp_path / "alert.avsc").write_text(alert.replace('"fields": [', '"fields": [{"name": "extra", "type": "int"}, ', 1))
    monkeypatch.setenv("PIPELINE_AVRO_DIR", str(tmp_path))
    assert codec.schema("alert").fingerprint.hex() != pinned()["alert"]
