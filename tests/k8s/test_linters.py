"""Offline security linters on what we ship: checkov on every rendered overlay, hadolint on the
Dockerfile. A finding fails the test unless tests/k8s/accepted-findings.yaml accepts it with a reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.k8s import OVERLAYS, ROOT, render_text

LINT = ROOT / ".stack" / "lint-venv" / "bin"
ACCEPTED = yaml.safe_load((Path(__file__).parent / "accepted-findings.yaml").read_text())


def _tool(name: str) -> Path:
    if not (LINT / name).exists():
        subprocess.run(["bash", str(ROOT / "tests" / "k8s" / "tools.sh")], check=True, timeout=900)
    return LINT / name


def test_every_accepted_finding_has_a_reason() -> None:
    for tool, findings in ACCEPTED.items():
        for check, reason in (findings or {}).items():
            assert isinstance(reason, str) and len(reason.split()) >= 8, f"{tool} {check}: give a reason"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing_unaccepted(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(render_text(overlay))
    done = subprocess.run(
        [str(_tool("checkov")), "-f", str(manifest), "--framework", "kubernetes", "-o", "json", "--quiet"],
        capture_output=True, text=True, timeout=300,
        # offline: no guideline download, no version check
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
             "ANSI_COLORS_DISABLED": "1"},
    )
    report = json.loads(done.stdout)
    report = report if isinstance(report, dict) else report[0]
    failed = {(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])}
    accepted = set(ACCEPTED["checkov"] or {})
    unaccepted = sorted(f for f in failed if f[0] not in accepted)
    assert not unaccepted, f"checkov findings on {overlay} not accepted in accepted-findings.yaml: {unaccepted}"
    assert report["summary"]["passed"] > 100  # it really ran its Kubernetes checks
    stale = accepted - {check for check, _ in failed}
    assert not stale, f"accepted-findings.yaml lists checks that no longer fail: {sorted(stale)}"


def test_hadolint_finds_nothing_unaccepted() -> None:
    ignores = [arg for check in (ACCEPTED["hadolint"] or {}) for arg in ("--ignore", check)]
    done = subprocess.run([str(_tool("hadolint")), "--format", "json", *ignores, str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=120)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], findings
    assert done.returncode == 0
