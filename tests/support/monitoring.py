"""What the monitoring tests share: the PrometheusRule and the dashboards as shipped in k8s/, the
PromQL expressions in them, and the metric names those expressions read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "base" / "monitoring"
RULE_FILE = MONITORING / "prometheusrule.yaml"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
RULES_TEST = ROOT / "tests" / "monitoring" / "rules-test.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        subprocess.run(["bash", str(ROOT / "tests" / "monitoring" / "tools.sh")], check=False, timeout=900)
        found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `make tools` (tests/monitoring/tools.sh installs Debian's prometheus)")
    return found


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULE_FILE.read_text())["spec"]["groups"]


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict) and variable.get("type") == "query":
            yield query["query"]


def all_expressions() -> list[str]:
    exprs = [str(r["expr"]) for r in rules()]
    for dashboard in dashboards().values():
        exprs += list(dashboard_expressions(dashboard))
    return exprs


# --- metric names in PromQL -------------------------------------------------------------------

# PromQL words that are not metric names (operators, modifiers, aggregations used without parens)
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GRAFANA = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or Grafana's `label_values(metric{...}, label)`) reads.
    Strings, label matchers, label lists, ranges and Grafana variables are removed first; what is
    left that is not a function call, a keyword or a number is a metric name."""
    label_values = re.match(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)", expr)
    if label_values:
        return {label_values.group(1)}
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GRAFANA.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d", name[0]):
            continue
        names.add(name)
    return names


def exported_names(text: str) -> set[str]:
    """Every name a /metrics page in the Prometheus text format exposes: families (HELP/TYPE lines,
    so a labelled family with no series yet counts) and sample names (_total, _bucket, ...)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            family, kind = line.split(" ")[2], line.split(" ")[3] if line.startswith("# TYPE ") else ""
            names.add(family)
            if kind == "counter":
                names.add(family if family.endswith("_total") else family + "_total")
            elif kind == "histogram":
                names.update(family + suffix for suffix in ("_bucket", "_count", "_sum"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
