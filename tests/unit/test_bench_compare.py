"""`pipeline bench --compare REF`: the other version's files, that its children run them, the turns
and the table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench import compare
from pipeline.config import ConfigError


def test_the_versions_take_turns_so_neither_always_runs_first() -> None:
    a, b = compare.Side("ref", Path("a")), compare.Side("this", Path("b"))
    assert [[s.label for s in turn] for turn in compare.order([a, b], 3)] == [
        ["ref", "this"], ["this", "ref"], ["ref", "this"]]


def test_the_table_gives_every_round_the_means_the_peak_memory_and_the_change() -> None:
    before = compare.Side("HEAD~1 (abc1234)", Path("a"), worker=[(4000.0, 250.0, 240.0), (3800.0, 240.0, 250.5)])
    after = compare.Side("this checkout (def5678)", Path("b"), worker=[(4400.0, 225.0, 280.0), (4200.0, 216.0, 270.0)])
    text = compare.report_text([before, after], ["worker"])
    assert "| worker | HEAD~1 (abc1234) | 250.0, 240.0 µs | 245.0 µs | 4,000, 3,800/s | 3,900/s | 250.5 MB |" in text
    assert "| worker | this checkout (def5678) | 225.0, 216.0 µs | 220.5 µs | 4,400, 4,200/s | 4,300/s | 280.0 MB |" in text
    assert "worker: CPU per record 245.0 -> 220.5 µs (-10.0 %), rate 3,900 -> 4,300/s (+10.3 %)" in text


def test_a_ref_is_exported_and_its_children_import_its_own_package(tmp_path: Path) -> None:
    """The point of the A/B: a child started for REF runs REF's code, not this checkout's (which
    `python -m` would find first from the wrong working directory, or the editable install)."""
    commit = compare.export_tree("HEAD", tmp_path / "ref")
    head = subprocess.run(["git", "-C", str(compare.CHECKOUT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert commit == head
    assert (tmp_path / "ref" / "pipeline" / "__main__.py").is_file()
    assert compare._package_of(tmp_path / "ref") == (tmp_path / "ref" / "pipeline").resolve()
    assert compare._package_of(compare.CHECKOUT) == (compare.CHECKOUT / "pipeline").resolve()


def test_an_unknown_ref_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--compare no-such-ref: not a commit of .*\)$"):
        compare.export_tree("no-such-ref", tmp_path)


def test_bench_flags_for_the_comparison_are_checked(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--compare", "HEAD", "--compare-stages", "worker,x"],
                            cwd=compare.CHECKOUT, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "pipeline bench: error: --compare-stages: x; choose worker, bridge, cost"


def test_the_cost_stage_shows_both_processes_at_the_offered_rate_with_the_latency_beside() -> None:
    before = compare.Side("main (abc1234)", Path("a"), cost_bridge=[(99.0, 820.0, 50.0), (100.0, 780.0, 51.0)],
                          cost_worker=[(99.0, 1130.0, 250.0), (100.0, 1070.0, 251.0)],
                          latency=[(20.0, 61.0), (22.0, 70.0)])
    after = compare.Side("this checkout (def5678)", Path("b"), cost_bridge=[(100.0, 400.0, 50.0), (100.0, 420.0, 50.0)],
                         cost_worker=[(100.0, 550.0, 250.0), (99.0, 530.0, 250.0)], latency=[(35.0, 80.0), (37.0, 90.0)])
    text = compare.report_text([before, after], ["cost"], 100.0)
    assert "| bridge at 100/s | main (abc1234) | 820.0, 780.0 µs | 800.0 µs | 99, 100/s | 100/s | 51.0 MB |" in text
    assert "worker at 100/s: CPU per record 1100.0 -> 540.0 µs (-50.9 %), rate 100 -> 100/s (+0.0 %)" in text
    assert "end to end at 100/s, this checkout (def5678): p50/p99 35/80, 37/90 ms" in text
