"""Topic names, and creating every topic the worker reads or writes before faust starts.

faust does not create an agent's source topics ("Ignoring missing topic"), and a table's changelog
must have as many partitions as its sources; the outputs are sent to the partition number of the
event that caused them (so a replay can find what a killed worker already published), so they need
that count too. All of them are created here with one partition count: the one the existing relay
topics already have, else ``--topic-partitions``.

faust's own topics (the tables' changelogs, its assignor's leader topic) are created here too, and
the worker starts only once the cluster's metadata shows every topic with a leader for each
partition. faust would create its own a moment before its consumer joins the group, and the group
leader's assignment, made from metadata that did not show them yet, left them out ("Ignoring
missing topic") until the next metadata refresh, minutes later (tests/faults/test_fresh_starts.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import catalog, events
from ..config import ConfigError

log = logging.getLogger("pipeline.worker")

__all__ = ["LOSS_TABLE", "RESOURCES_TABLE", "TABLES", "Topics", "ensure", "faust_topics", "source_families"]

RESOURCES_TABLE, LOSS_TABLE = "resources", "loss"  # the worker's faust tables (app.py names them so)
TABLES = (RESOURCES_TABLE, LOSS_TABLE)  # their changelogs are created here


def source_families() -> tuple[str, ...]:
    """Families whose events open or close an operation: every catalog row with one."""
    families = {row.family for row in catalog.ROWS if row.operation or
                any(s in ("start", "end", "error") for s in row.statuses)}
    return tuple(sorted(families))


@dataclass(frozen=True, slots=True)
class Topics:
    sources: tuple[str, ...]
    operations: str
    node_state: str
    alerts: str
    deadletter: str

    @classmethod
    def named(cls, topic_prefix: str, output_prefix: str) -> Topics:
        return cls(
            sources=tuple(events.topic_for(f, topic_prefix) for f in source_families()),
            operations=f"{output_prefix}operations",
            node_state=f"{output_prefix}node-state",
            alerts=f"{output_prefix}alerts",
            deadletter=f"{topic_prefix}deadletter",
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.operations, self.node_state, self.alerts)


def faust_topics(app_id: str) -> dict[str, int | None]:
    """faust's own topics of app `app_id`, as faust names them: name -> partitions (None: the relay
    topics' count). Changelogs are compacted. tests/unit/test_topics.py checks the names against faust's."""
    own: dict[str, int | None] = {f"{app_id}-{table}-changelog": None for table in TABLES}
    own[f"{app_id}-__assignor-__leader"] = 1
    return own


async def _visible(admin: Any, names: list[str], timeout_s: float) -> list[str]:
    """Wait until the metadata shows every topic of `names` with a leader for each partition;
    returns those it still did not show after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        hidden = [d["topic"] for d in described
                  if d.get("error_code", 0) != 0 or not d.get("partitions")
                  or any(p.get("leader", -1) < 0 for p in d["partitions"])]
        if not hidden or asyncio.get_running_loop().time() > deadline:
            return hidden
        await asyncio.sleep(0.2)


async def _ensure(client: Mapping[str, Any], topics: Topics, partitions: int, replication: int,
                  timeout_s: float, own: Mapping[str, int | None]) -> int:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from pipeline import preflight

    bootstrap = client["bootstrap_servers"]
    await preflight.check_kafka(dict(client))  # refused credentials or certificates: one line, now
    admin = AIOKafkaAdminClient(**client, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - any connect failure is one line for the user
        await admin.close()
        raise ConfigError(f"cannot reach Kafka at {','.join(bootstrap)}: {exc or type(exc).__name__}") from None
    try:
        wanted = list(topics.sources) + list(topics.outputs) + [topics.deadletter] + list(own)
        # describe only what exists: a metadata request naming a missing topic makes a broker with
        # auto.create.topics.enable create it, with its default partition count
        present = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in wanted if t in present]) if present & set(wanted) else []
        existing = {d["topic"]: len(d["partitions"]) for d in described
                    if d.get("error_code", 0) == 0 and d.get("partitions")}
        counts = {existing[t] for t in topics.sources + topics.outputs if t in existing}
        if len(counts) > 1:
            detail = ", ".join(f"{t}={existing[t]}" for t in topics.sources + topics.outputs if t in existing)
            raise ConfigError(f"relay and output topics must have one partition count, found {detail}")
        if counts:
            partitions = counts.pop()
        new = []
        for name in wanted:
            if name in existing:
                continue
            compact = name == topics.node_state or name.endswith("-changelog")
            config = {"cleanup.policy": "compact"} if compact else {}
            count = own.get(name) or partitions
            new.append(NewTopic(name, count, replication, topic_configs=config))
        if new:
            try:
                await admin.create_topics(new)
            except Exception as exc:  # noqa: BLE001 - a concurrent creator wins the race; re-check
                if "TopicAlreadyExists" not in type(exc).__name__ and "already exists" not in str(exc):
                    raise ConfigError(f"cannot create topics: {exc}") from None
        hidden = await _visible(admin, wanted, timeout_s)
        if hidden:
            log.warning("the cluster's metadata does not show %s after %.0f s; starting anyway (the group's "
                        "assignment is made again once it does)", ", ".join(hidden), timeout_s)
        return partitions
    finally:
        await admin.close()


def ensure(client: Mapping[str, Any], topics: Topics, partitions: int, replication: int = 1,
           timeout_s: float = 30.0, own: Mapping[str, int | None] | None = None) -> int:
    """Create missing topics, and faust's `own` ones (`faust_topics`), and wait until the metadata
    shows them all (`client`: aiokafka client arguments, bootstrap_servers included); returns the
    partition count every source and output topic has."""
    return asyncio.run(_ensure(client, topics, partitions, replication, timeout_s, own or {}))
