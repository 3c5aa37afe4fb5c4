"""The PrometheusRule's rules through Prometheus' own promtool: `check rules` is clean, and
`promtool test rules` (rules-test.yaml) makes every alert fire on synthetic series and stay silent
on others."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.monitoring import ROOT, RULES_TEST, alerts, promtool, rule_groups


def _rule_file(tmp_path: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file as it stands (`groups:`)."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def test_promtool_check_rules_is_clean(tmp_path: Path) -> None:
    done = subprocess.run([promtool(), "check", "rules", str(_rule_file(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in output, output
    assert "WARNING" not in output.upper(), output


def test_promtool_test_rules_passes(tmp_path: Path) -> None:
    _rule_file(tmp_path)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = subprocess.run([promtool(), "test", "rules", str(tmp_path / RULES_TEST.name)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_the_rule_tests_fail_when_a_rule_is_wrong(tmp_path: Path) -> None:
    """promtool really compares: a rule whose threshold moved makes its tests fail."""
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "PipelineNodesStuck":
                rule["expr"] = rule["expr"].replace("> 0", "> 5")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = subprocess.run([promtool(), "test", "rules", str(tmp_path / RULES_TEST.name)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "alertname: PipelineNodesStuck" in done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_test() -> None:
    cases = [case for test in yaml.safe_load(RULES_TEST.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it stays silent"


def test_every_alert_has_a_severity_and_a_runbook_paragraph_in_the_docs() -> None:
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["runbook"] == f"docs/monitoring.md#{name.lower()}", name
        assert f"### {name}\n" in docs, f"docs/monitoring.md has no runbook section for {name}"
