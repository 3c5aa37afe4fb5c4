"""A worker's RocksDB tables restored from the changelog in bulk (faust_patches.restore_in_bulk) hold
exactly what the changelog says, also after a worker killed in the middle of its restore.

The changelog is written beforehand, as the agent writes it (raw key, the state's JSON), with what a
real restore meets: keys written twice (the last value wins) and tombstones (the key is gone). The
expected table is computed from those records; the restored one is read back from the RocksDB files
the worker left, after a clean stop. A worker using faust's own recovery (memory store) on the same
changelog is the second witness, through the web views.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.test_web_readyz_recovery import PARTITIONS, state_records, write_changelog
from tests.support.ports import free_port
from tests.support.web_traffic import WorkerProcess, get

pytestmark = pytest.mark.integration

OFFSET_KEY = b"__faust\0offset__"  # where faust's RocksDB store keeps a partition's persisted offset


def changelog(prefix: str) -> tuple[list[tuple[bytes, bytes | None, int]], dict[bytes, bytes]]:
    """The records to write (key, value or None for a tombstone, partition) and the table they make."""
    first = state_records(prefix)
    rewritten = [(key, orjson.dumps({**orjson.loads(value), "w": 1_700_000_000_000_000}), p)
                 for key, value, p in first[::17]]
    deleted = [(key, None, p) for key, _, p in first[5::23]]
    records: list[tuple[bytes, bytes | None, int]] = [*first, *rewritten, *deleted]
    table: dict[bytes, bytes] = {}
    for key, value, _ in records:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return records, table


def read_tables(data_dir: Path, app_id: str) -> tuple[dict[bytes, bytes], dict[int, int]]:
    """The `resources` table in the RocksDB files a stopped worker left: its rows, and each
    partition's persisted offset."""
    import rocksdict

    rows: dict[bytes, bytes] = {}
    persisted: dict[int, int] = {}
    for p in range(PARTITIONS):
        path = data_dir / app_id / "v1" / "tables" / f"resources-{p}.db"
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            for key, value in db.items():
                if key == OFFSET_KEY:
                    persisted[p] = int(value)
                else:
                    rows[key] = value
        finally:
            db.close()
    return rows, persisted


def ready(worker: WorkerProcess, timeout: float = 180) -> list[str]:
    """Poll /readyz until 200; the reasons seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        try:
            status, body, _ = get(worker.url + "/readyz", timeout=5)
        except OSError:
            time.sleep(0.02)
            continue
        seen.append(body["reason"])
        if status == 200:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"not ready in {timeout:.0f}s: {seen[-3:]}\n{worker.log_tail()}")


def kill_while_recovering(worker: WorkerProcess, after_s: float, timeout: float = 180) -> bool:
    """SIGKILL the worker `after_s` after its /readyz first says it recovers; True if it was not
    ready yet when killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body, _ = get(worker.url + "/readyz", timeout=5)
        except OSError:
            time.sleep(0.01)
            continue
        if body["reason"] == "recovering tables" or status == 200:
            time.sleep(after_s)
            still_recovering = get(worker.url + "/readyz", timeout=5)[0] != 200
            assert worker.proc is not None
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(10)
            return still_recovering
        time.sleep(0.01)
    raise AssertionError(f"never saw a recovery: {worker.log_tail()}")


def serves_every_node(proc: WorkerProcess, nodes: int) -> None:
    """Once ready, the started worker's summary counts every node of the table; then it stops."""
    try:
        ready(proc)
        status, summary, _ = get(proc.url + "/api/summary", timeout=60)
        assert status == 200 and summary["nodes"]["total"] == nodes
    finally:
        proc.stop()


def test_a_bulk_restore_killed_midway_ends_with_the_changelog_s_table(tmp_path: Path, unique: str) -> None:
    app_id, prefix = f"bulk-{unique}", f"bulk{unique}."
    records, expected = changelog(prefix)
    ends = asyncio.run(write_changelog(f"{app_id}-resources-changelog", records))
    rocks = ("--store", "rocksdb://")
    port = free_port()

    def worker(name: str, *extra: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path, app_id, prefix, port, *extra, name=name)
        w.args[w.args.index("--data-dir") + 1] = str(tmp_path / "data")  # one data dir for every run
        return w.start()

    killed_midway = []
    for after_s in (0.0, 0.4):  # at the start of the restore, then somewhere in it
        killed_midway.append(kill_while_recovering(worker(f"killed-{after_s}", *rocks), after_s))
    restored = worker("restored", *rocks)
    try:
        ready(restored)
        assert "restored" in restored.log_path.read_text() and "in bulk" in restored.log_path.read_text()
    finally:
        restored.stop()
    rows, persisted = read_tables(tmp_path / "data", app_id)
    assert len(rows) == len(expected) and rows == expected
    assert persisted == {p: end - 1 for p, end in ends.items() if end}
    print(f"{len(records):,} changelog records, {len(expected):,} rows; killed while recovering: {killed_midway}")

    serves_every_node(worker("kept", *rocks), len(expected))  # the data dir kept: nothing left to restore
    assert read_tables(tmp_path / "data", app_id)[0] == expected

    faust_s = WorkerProcess(tmp_path, app_id, prefix, free_port(), name="faust-recovery")  # memory://
    faust_s.start()
    serves_every_node(faust_s, len(expected))
