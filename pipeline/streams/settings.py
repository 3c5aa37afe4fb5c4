"""The worker's settings: the flags and variables of `pipeline worker` (`SETTINGS`), and what the app
is built with (`WorkerSettings`, whose defaults are the flags'). Both the command and the app
read them from here, so neither imports the other for them."""
from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import catalog, registry
from ..config import KAFKA, VALUE_FORMAT, ConfigError, Group, Setting, default_of, kafka_client_kwargs
from .models import Settings
from .topics import Topics

__all__ = ["SETTINGS", "WorkerSettings", "parse_deadlines", "settings_from_args"]


def parse_deadlines(items: list[str]) -> dict[str, float]:
    """``OPERATION=SECONDS`` items (flags, or comma-separated in DEADLINES)."""
    out: dict[str, float] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, seconds = part.partition("=")
            try:
                value = float(seconds)
            except ValueError:
                value = -1.0
            if not sep or not name or value <= 0:
                raise ConfigError(f"deadline {part!r} is not OPERATION=SECONDS with SECONDS > 0 "
                                  f"(e.g. baremetal.node.power_set=300)")
            out[name.strip()] = value
    return out


SETTINGS: tuple[Group, ...] = (
    KAFKA,
    registry.SETTINGS,
    Group("worker", (
        VALUE_FORMAT,
        Setting("--app-id", "WORKER_APP_ID", "faust app id: consumer group and table changelog prefix",
                "pipeline-worker"),
        Setting("--output-prefix", "OUTPUT_TOPIC_PREFIX", "prefix of the output topics operations, node-state, alerts",
                "pipeline."),
        Setting("--replication", "TOPIC_REPLICATION_FACTOR", "replication factor of topics the worker creates", 1, int),
        Setting("--store", "WORKER_STORE", "table store: rocksdb:// (production) or memory:// (tests)", "rocksdb://"),
        Setting("--data-dir", "WORKER_DATA_DIR", "directory of the RocksDB tables", ".worker-data"),
        Setting("--rocksdb-memory-mb", "WORKER_ROCKSDB_MEMORY_MB",
                "RocksDB's memory for all the worker's table partitions together: one block cache, to which "
                "the memtables are charged (they flush at a quarter of it), MiB", 128, int),
        Setting("--session-timeout", "WORKER_SESSION_TIMEOUT",
                "a worker that died without leaving its group is replaced after this, s", 30.0, float),
        Setting("--group-instance-id", "WORKER_GROUP_INSTANCE_ID",
                "static group membership (e.g. the StatefulSet pod name): a restarted worker takes its partitions "
                "back at once, without waiting for the session timeout"),
        Setting("--web-host", "WORKER_WEB_HOST", "host name other workers reach this one's web views at", "127.0.0.1"),
        Setting("--web-port", "WORKER_WEB_PORT", "web views port", 6066, int),
        Setting("--web-bind", "WORKER_WEB_BIND", "address the web server binds", "127.0.0.1"),
        Setting("--no-web", "WORKER_WEB_ENABLED", "no web server (WORKER_WEB_ENABLED=0)", False, kind="switch",
                from_env=lambda raw: raw.strip() == "0", shown_default="web on"),
    )),
    Group("watchdog (event time)", (
        Setting("--deadline", "DEADLINES",
                "deadline of an operation's end, overriding the catalog's; repeatable (the variable: comma-separated)",
                kind="list", metavar="OPERATION=SECONDS", shown_default="the catalog's"),
        Setting("--default-deadline", "DEFAULT_DEADLINE", "deadline of operations the catalog has none for, s",
                catalog.DEFAULT_DEADLINE_S, float),
        Setting("--stuck-after", "STUCK_AFTER",
                "a node in a transitional provision state longer than this raises stuck_state, s", 3600.0, float),
        Setting("--orphan-grace", "ORPHAN_GRACE", "how long an end waits for its start before orphan_end, s",
                300.0, float),
        Setting("--lateness", "WATERMARK_LATENESS", "the watermark trails the newest event time of a partition by this, s",
                60.0, float),
        Setting("--late-horizon", "LATE_HORIZON", "after missing_end, how long a late end is still paired, s",
                86400.0, float),
        Setting("--dedup-window", "DEDUP_WINDOW", "message ids remembered per resource, s of event time", 3600.0, float),
        Setting("--dedup-max-ids", "DEDUP_MAX_IDS", "... and at most this many per resource", 32, int),
        Setting("--batch-size", "WORKER_BATCH_SIZE",
                "relay records the agent folds in one batch, at most (a batch is what the stream has buffered): each "
                "resource's state is written once per batch (and kept parsed between batches)", 1000, int),
        Setting("--fetch-partition-mb", "WORKER_FETCH_PARTITION_MB",
                "the most the consumer fetches of one partition in one request, MB: it fetches again only once the "
                "previous fetch is handed over, so under a backlog a larger fetch keeps the agent fed; memory: up to "
                "this much per assigned partition", 4, int),
        Setting("--fetch-min-kb", "WORKER_FETCH_MIN_KB",
                "the broker answers a fetch once this much is there, or after --fetch-wait-ms, KB; with "
                "--fetch-round-ms the least a fetch waits for; 0 = as soon as one record is (faust's). Each fetch "
                "round costs the worker ~1.5 ms of CPU, so fewer, fuller fetches under a trickle cost it and the "
                "broker far less (at 300 events/s: 0.50 -> 0.18 of a core with 64)",
                8, int),
        Setting("--fetch-wait-ms", "WORKER_FETCH_WAIT_MS",
                "with --fetch-min-kb: the longest the broker holds a fetch, ms (the most a record waits when "
                "less than the min bytes come)",
                500, int),
        Setting("--fetch-round-ms", "WORKER_FETCH_ROUND_MS",
                "with --fetch-min-kb: a fetch waits for about this long of the traffic, ms: its min bytes follow "
                "the bytes received in the last second times this, updated once a second, at least --fetch-min-kb "
                "and at most 1 MB; above --fetch-min-kb a fetch is held 2.5 times this at most, not --fetch-wait-ms; "
                "after a second without events (heartbeats aside) the first record answers a fetch, which "
                "otherwise waits 1.5 s (faust's wait: an idle worker fetches this often); "
                "0 = always --fetch-min-kb and --fetch-wait-ms",
                40, int),
        Setting("--replay-guard", "REPLAY_GUARD",
                "on assignment, re-read this much (s before the newest record) of each output partition so a replay "
                "does not publish twice; 0 = off", 30.0, float),
    )),
    Group("running", (
        Setting("--stop-timeout", "WORKER_STOP_TIMEOUT",
                "after SIGTERM or SIGINT, a clean stop that has not ended after this is cut short: the stacks "
                "are logged and the worker exits with status 4 (so does a second signal), s; keep it below the "
                "pod's termination grace period", 60.0, float),
        Setting("--stall-timeout", "WORKER_STALL_TIMEOUT",
                "records wait (or a batch is held) and the agent has finished no batch for this long, or the "
                "event loop has not turned: /healthz fails, pipeline_agent_stalled is 1, the stacks are "
                "logged; after half as long again the worker exits with status 3, s; 0 = off", 120.0, float),
        Setting("--stop-after", "WORKER_STOP_AFTER",
                "exit after reading this many relay records and print a JSON summary (benchmarks; 0 = never)", 0, int),
        Setting("--loglevel", "WORKER_LOGLEVEL", "log level", "warning", choices=("debug", "info", "warning", "error")),
    )),
)


def _default(flag: str) -> Any:
    return default_of(SETTINGS, flag)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What `pipeline worker` runs with; the defaults are the flags' (`SETTINGS` above)."""

    machine: Settings = field(default_factory=Settings)
    app_id: str = _default("--app-id")
    bootstrap_servers: tuple[str, ...] = tuple(_default("--kafka-bootstrap-servers").split(","))
    kafka: Mapping[str, Any] = field(default_factory=dict)  # config.kafka_client_kwargs: TLS/SASL
    topic_prefix: str = _default("--topic-prefix")
    output_prefix: str = _default("--output-prefix")
    partitions: int = _default("--topic-partitions")
    replication: int = _default("--replication")
    value_format: str = _default("--value-format")
    avro_framing: str = _default("--avro-framing")
    store: str = _default("--store")
    data_dir: str = _default("--data-dir")
    web_enabled: bool = not _default("--no-web")
    web_host: str = _default("--web-host")
    web_port: int = _default("--web-port")
    web_bind: str = _default("--web-bind")
    lateness_s: float = _default("--lateness")  # the watermark trails the newest event time by this much
    replay_guard_s: float = _default("--replay-guard")  # how far back an output partition is re-read on assignment
    rocksdb_memory_mb: int = _default("--rocksdb-memory-mb")  # block cache and memtables of every table partition
    session_timeout_s: float = _default("--session-timeout")  # a worker that died without leaving is replaced after this
    group_instance_id: str | None = None  # static membership: a restart takes its place at once
    batch_size: int = _default("--batch-size")  # relay records per batch of the agent's body, at most
    fetch_partition_mb: int = _default("--fetch-partition-mb")  # one partition's most in one fetch request
    fetch_min_kb: int = _default("--fetch-min-kb")  # a fetch is answered once this much is there ...
    fetch_wait_ms: int = _default("--fetch-wait-ms")  # ... or this long has passed
    fetch_round_ms: int = _default("--fetch-round-ms")  # the min bytes: this long of the traffic (0: fixed)
    stop_timeout_s: float = _default("--stop-timeout")  # a clean stop longer than this is cut short
    stall_timeout_s: float = _default("--stall-timeout")  # no progress while records wait: a stall (0 = off)
    stop_after: int = _default("--stop-after")  # exit once this many relay records were read (benchmarks); 0 = never
    loglevel: str = _default("--loglevel")

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka client arguments (admin, the replay guard's consumer)."""
        return {**self.kafka, "bootstrap_servers": list(self.bootstrap_servers)}

    @property
    def topics(self) -> Topics:
        return Topics.named(self.topic_prefix, self.output_prefix)


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    """The parsed flags, checked: a bad value raises ConfigError naming the setting."""
    deadlines = dict(catalog.OPERATIONS)
    deadlines.update(parse_deadlines([d for d in args.deadline or () if d]))
    for name, value in (("--stuck-after", args.stuck_after), ("--orphan-grace", args.orphan_grace),
                        ("--late-horizon", args.late_horizon), ("--dedup-window", args.dedup_window),
                        ("--default-deadline", args.default_deadline)):
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, not {value:g}")
    if args.stop_timeout <= 0:
        raise ConfigError(f"--stop-timeout must be > 0, not {args.stop_timeout:g}")
    if args.stall_timeout < 0 or 0 < args.stall_timeout < 5:
        raise ConfigError(f"--stall-timeout must be 0 (off) or at least 5 s, not {args.stall_timeout:g}")
    if not 6 <= args.session_timeout <= 300:
        raise ConfigError(f"--session-timeout must be between 6 and 300 s, not {args.session_timeout:g}")
    if args.lateness < 0:
        raise ConfigError(f"--lateness must be >= 0, not {args.lateness:g}")
    if args.dedup_max_ids < 1:
        raise ConfigError("--dedup-max-ids must be >= 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if not 1 <= args.fetch_partition_mb <= 64:
        raise ConfigError(f"--fetch-partition-mb must be between 1 and 64, not {args.fetch_partition_mb}")
    if not 0 <= args.fetch_min_kb <= 16384:
        raise ConfigError(f"--fetch-min-kb must be between 0 and 16384, not {args.fetch_min_kb}")
    if not 1 <= args.fetch_wait_ms <= 1500:
        raise ConfigError(f"--fetch-wait-ms must be between 1 and 1500, not {args.fetch_wait_ms}")
    if not 0 <= args.fetch_round_ms <= 1000:
        raise ConfigError(f"--fetch-round-ms must be between 0 and 1000, not {args.fetch_round_ms}")
    if args.topic_partitions < 1:
        raise ConfigError("--topic-partitions must be >= 1")
    if not (args.store.startswith("memory://") or args.store.startswith("rocksdb://")):
        raise ConfigError(f"--store {args.store!r}: use memory:// or rocksdb://")
    if args.store.startswith("rocksdb://") and importlib.util.find_spec("rocksdict") is None:
        raise ConfigError("--store rocksdb:// needs the rocksdict package")
    machine = Settings(
        deadlines=deadlines, default_deadline_s=args.default_deadline, orphan_grace_s=args.orphan_grace,
        stuck_after_s=args.stuck_after, late_horizon_s=args.late_horizon,
        dedup_window_s=args.dedup_window, dedup_max_ids=args.dedup_max_ids,
    )
    return WorkerSettings(
        machine=machine, app_id=args.app_id,
        bootstrap_servers=tuple(s.strip() for s in args.kafka_bootstrap_servers.split(",") if s.strip()),
        kafka={k: v for k, v in kafka_client_kwargs(args).items() if k != "bootstrap_servers"},
        topic_prefix=args.topic_prefix, output_prefix=args.output_prefix, partitions=args.topic_partitions,
        replication=args.replication, value_format=args.value_format, avro_framing=args.avro_framing,
        store=args.store, data_dir=args.data_dir,
        web_enabled=not args.no_web, web_host=args.web_host, web_port=args.web_port, web_bind=args.web_bind,
        lateness_s=args.lateness, replay_guard_s=args.replay_guard, rocksdb_memory_mb=args.rocksdb_memory_mb,
        batch_size=args.batch_size, fetch_partition_mb=args.fetch_partition_mb,
        fetch_min_kb=args.fetch_min_kb, fetch_wait_ms=args.fetch_wait_ms,
        fetch_round_ms=args.fetch_round_ms,
        stop_after=args.stop_after, stop_timeout_s=args.stop_timeout, stall_timeout_s=args.stall_timeout,
        loglevel=args.loglevel,
        session_timeout_s=args.session_timeout, group_instance_id=args.group_instance_id or None,
    )
