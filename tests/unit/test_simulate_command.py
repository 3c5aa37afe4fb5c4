"""`pipeline simulate` as a user runs it: one-line errors for bad flags, a summary, a truth file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def simulate(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "simulate", *args], capture_output=True,
                          timeout=timeout, env=env)


def test_same_seed_and_start_same_bytes_in_any_process() -> None:
    """Reproducible across processes, whatever their str hash seed (a capture is a test fixture)."""
    args = ("--output", "stdout", "--events", "2000", "--seed", "3", "--start", "2026-01-01T00:00:00",
            "--loss", "0.05", "--duplicates", "0.02", "--reorder", "4", "--quiet")
    runs = [simulate(*args, env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout.count(b"\n") >= 2000
    assert runs[0].stdout == runs[1].stdout


@pytest.mark.parametrize("args, message", [
    (["--loss", "1.5"], "--loss must be a fraction"),
    (["--rate", "-1"], "--rate must be"),
    (["--nodes", "0", "--images", "0"], "--nodes and --images"),
    (["--start", "yesterday"], "--start 'yesterday'"),
    (["--truth", "/nonexistent/dir/truth.json"], "does not exist"),
    (["--output", "carrier-pigeon"], "invalid choice"),
])
def test_bad_flags_are_one_line(args: list[str], message: str) -> None:
    result = simulate("--output", "stdout", *args) if "--output" not in args else simulate(*args)
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_truth_file_and_summary_agree(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    result = simulate("--output", "stdout", "--rate", "0", "--nodes", "100", "--images", "20", "--events", "2000",
                      "--loss", "0.1", "--duplicates", "0.05", "--reorder", "3", "--seed", "8",
                      "--start", "2026-11-22 00:00:00", "--truth", str(truth_path))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.splitlines()
    truth = json.loads(truth_path.read_text())
    s, ops = truth["summary"], truth["operations"]
    assert s["events_sent"] == len(lines) > 2000
    assert s["operations_started"] == len(ops) == s["operations_ended"] + s["operations_errored"]
    assert s["ends_dropped"] == sum(op["end_dropped"] for op in ops) > 0
    assert s["expected_missing_end"] == sum(op["expected"] == "missing_end" for op in ops)
    message_ids = {json.loads(json.loads(line)["oslo.message"])["message_id"] for line in lines}
    assert len(lines) - len(message_ids) == s["events_duplicated"] > 0
    for op in ops:
        assert op["start_message_id"] in message_ids
        assert (op["end_message_id"] in message_ids) is (not op["end_dropped"])
    assert ops[0]["started_at"].startswith("2026-11-2")
    err = result.stderr.decode()
    assert "ends dropped" in err and f"{s['ends_dropped']:,} ends dropped" in err
