"""What the patches rely on: the pinned versions, every private name they touch (`REQUIRED`) and the
source hash of every faust method they copy or wrap (`PATCHED_SOURCES`), with the checks
tests/unit/test_faust_patches.py runs."""
from __future__ import annotations

import hashlib
import inspect
from typing import Any

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

# (importable owner, attribute, how to find it): "class" = defined by the class itself, not inherited
# (faust's base classes hold no-op stand-ins: a rocksdb store that lost its own
# set_persisted_offset would fall back silently to Store's `...`); "consumer" = on a consumer
# instance faust created (set in __init__); "store" = on a rocksdb store class; "instance" = set
# in the class's __init__
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("faust.app.base:App", "_new_consumer", "class"),
    ("faust.transport.consumer:Consumer", "_drain_messages", "class"),
    ("faust.transport.consumer:Consumer", "_add_gap", "class"),
    ("faust.transport.consumer:Consumer", "perform_seek", "class"),
    ("faust.transport.consumer:Consumer", "_read_offset", "consumer"),
    ("faust.transport.consumer:Consumer", "_commit_every", "consumer"),
    ("faust.transport.consumer:Consumer", "_n_acked", "consumer"),
    ("faust.transport.consumer:Consumer", "_acked", "consumer"),
    ("faust.transport.consumer:Consumer", "_acked_index", "consumer"),
    ("faust.transport.consumer:Consumer", "_committed_offset", "consumer"),
    ("faust.transport.consumer:Consumer", "suspend_flow", "consumer"),
    ("faust.transport.consumer:Consumer", "diag", "consumer"),
    ("faust.transport.consumer:Consumer", "consumer_stopped_errors", "consumer"),
    ("faust.transport.drivers.aiokafka:Consumer", "_thread", "consumer"),
    ("faust.transport.consumer:Consumer", "seek", "class"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "seek", "class"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_create_worker_consumer", "class"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_fetch_min_bytes", "instance"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_fetch_max_wait_ms", "instance"),
    # fetch.pace_fetches
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_fetcher", "instance"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "start", "class"),
    ("aiokafka.consumer.fetcher:Fetcher", "_fetch_min_bytes", "instance"),
    ("aiokafka.consumer.fetcher:Fetcher", "_fetch_max_wait_ms", "instance"),
    ("aiokafka.consumer.fetcher:Fetcher", "fetched_records", "class"),
    ("faust.transport.drivers.aiokafka:Producer", "_ensure_producer", "class"),
    ("faust.transport.drivers.aiokafka:Producer", "flush", "class"),
    ("faust.transport.consumer:CONSUMER_FETCHING", "", "module"),
    ("faust.transport.drivers.aiokafka:ensure_aiokafka_TP", "", "module"),
    ("faust.stores.rocksdb:Store", "_db_for_partition", "class"),
    ("faust.stores.rocksdb:Store", "_key_index", "store"),
    ("faust.stores.rocksdb:Store", "set_persisted_offset", "class"),
    ("faust.sensors.monitor:Monitor", "tp_read_offsets", "class"),
    ("faust.sensors.monitor:Monitor", "tp_end_offsets", "class"),
    ("faust.sensors.monitor:Monitor", "stream_inbound_time", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_message_in", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_stream_event_in", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_stream_event_out", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_message_out", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "track_tp_end_offset", "class"),
    ("faust.sensors.prometheus:FaustMetrics", "create", "class"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "seek", "class"),
    ("mode.services:Service", "_crashed", "consumer"),
    # commits.commit_log_on_demand
    ("faust.transport.consumer:terminal", "logtable", "class"),
    # commits.commit_against_one_assignment
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_commit", "class"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_ensure_consumer", "class"),
    ("aiokafka.producer.producer:AIOKafkaProducer", "send", "class"),
    ("faust.topics:Topic", "_compile_decode", "class"),
    ("faust.streams:Stream", "_on_message_in", "instance"),
    ("faust.streams:Stream", "_on_stream_event_in", "instance"),
    ("faust.streams:Stream", "_processors", "instance"),
    ("faust.transport.consumer:Consumer", "unacked", "class"),
    ("faust.types.tuples:Message", "tracked", "instance"),
    ("faust.types.tuples:Message", "generation_id", "instance"),
    ("faust.types.app:AppT", "consumer_generation_id", "class"),  # App inherits it from AppT
    ("mode.utils.queues:ThrowableQueue", "get_nowait", "class"),
    # recovery.restore_in_bulk
    ("faust.tables.recovery:Recovery", "_build_offsets", "class"),
    ("faust.tables.recovery:Recovery", "active_highwaters", "instance"),
    ("faust.tables.recovery:Recovery", "tp_to_table", "instance"),
    ("faust.stores.rocksdb:Store", "use_rocksdict", "store"),
    ("aiokafka.producer.producer:AIOKafkaProducer", "client", "instance"),
    ("aiokafka.client:AIOKafkaClient", "_wait_on_metadata", "class"),
    ("aiokafka.client:AIOKafkaClient", "_topics", "instance"),
    ("aiokafka.client:AIOKafkaClient", "add_topic", "class"),
    ("aiokafka.client:AIOKafkaClient", "set_topics", "class"),
    ("faust.tables.manager:TableManager", "_update_channels", "class"),
    ("faust.tables.manager:TableManager", "on_start", "class"),
    # stores.RocksDBMemory
    ("faust.stores.rocksdb:Store", "rocksdb_options", "store"),
    ("faust.stores.rocksdb:RocksDBOptions", "as_options", "class"),
    ("faust.stores.rocksdb:RocksDBOptions", "bloom_filter_size", "class"),
    ("faust.stores.rocksdb:RocksDBOptions", "use_rocksdict", "class"),
)

# faust (and aiokafka) methods a patch copies, wraps or relies on, with the sha256 of their source
# at the pinned versions: a change upstream means the patch must be re-diffed
PATCHED_SOURCES: dict[str, str] = {
    "faust.transport.consumer:Consumer._drain_messages":
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    "faust.app.base:App._new_consumer":
        "bff6ccd646b71ea99a7e7a7d1c62adbf3d34432a0b42a39e6f60b4c0307d89c8",
    "faust.stores.rocksdb:Store._set":
        "4227e561e288d9413bf663a3a67940fd4976f5484e70e49445858ce4d400d26e",
    "faust.stores.rocksdb:Store._get":
        "7ae8dfd6d7754a5952ae162d4d5cf0d51a8a020ed730a4a7c7dc7f7c84e73fb8",
    # decode.raw_bytes_schema stands in for these four, and faust calls it from the fifth
    "faust.serializers.schemas:Schema.compile":
        "d46eec5ce3195b2c6752cb860a10946cee66ddf6a955f2ea44ac1568c0ecb9ad",
    "faust.serializers.registry:Registry.loads_key":
        "75262a2361a3bd256c346fcfa432182468dac4328afe48bcd0e62a9b6e3573be",
    "faust.serializers.registry:Registry.loads_value":
        "a9a8d9f63e03744fb9fcfbb3dfc03acd949032c0515fa2384c7b8c1d40378059",
    "faust.app.base:App.create_event":
        "15fea3d1e95e6625b2f6a969e9ce4bbed786bed15fde58f0c6518f6e461f7a10",
    # stream.event_batches keeps the per-event bookkeeping of this iterator
    "faust.streams:Stream._py_aiter":
        "3a48ee257a65435b482d51edb74f2993a67867949b1ef89b49fea893769e0614",
    "faust.topics:Topic._compile_decode":
        "6474178f8c211c056192d1b1a470cd9a617a3d7c59babf9b9297b24e3e507c26",
    # fetch.fetch_in_rounds wraps the first and sets what the second hands to aiokafka's fetcher
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer":
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
    # recovery.restore_in_bulk runs after the first, inside the second's sequence (highwaters, then
    # offsets, then the seek), and writes RocksDB as the third and fourth do
    "faust.tables.recovery:Recovery._build_offsets":
        "27eec86be06cb51f66dfd2572be2f9b41acd22c3570239bb5c554bd94e59a1d6",
    "faust.tables.recovery:Recovery._restart_recovery.fun":
        "6bd8a8558a2dffe4c60b8150f23d721baa6b3d658367f911a3ad2187e20efc6f",
    "faust.stores.rocksdb:Store.apply_changelog_batch":
        "ea3344d369fc4ab5e3cdace30565691136035a463acb7b2551fdc0b8af71643b",
    "faust.stores.rocksdb:Store.set_persisted_offset":
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45",
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start":
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
    # fetch.pace_fetches: faust hands records over through the first (consumer._fetcher.fetched_records,
    # on the consumer thread), which pace_fetches wraps; the second reads _fetch_min_bytes afresh for
    # every round's FetchRequest (and _fetch_max_wait_ms); the third's serialized sizes are what is counted
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records":
        "39a2c6c79fc1455a199629912b533458a720c64983bc957420a42feef6593baa",
    "aiokafka.consumer.fetcher:Fetcher._get_actions_per_node":
        "1dab2cf937d165d0eeacc8da8ed2b0ebd80b321bb6583757e01cdc1013d31635",
    "aiokafka.consumer.fetcher:Fetcher.fetched_records":
        "be4348896b9b66afe048de954e2be91c546f4e96c94cb120d5764ec77ce8f19e",
    "aiokafka.structs:ConsumerRecord":
        "1d35bd6c8da0182ee6f09b457f245923759371c49da0f2fb020268d439c17b5f",
    # producer.track_every_topic wraps the first; the second asks for the tracked topics only
    "aiokafka.client:AIOKafkaClient._wait_on_metadata":
        "52b0a5ee78ef3aa0c21c82b69baa20eb6983d9e5871e9e66784198cb2f1bf256",
    "aiokafka.client:AIOKafkaClient._metadata_update":
        "06dc51ed3e0d38b8d64100fd59012f399b2235c2f4804dfd142fcec397412fda",
    # tables.start_tables_at_once stands in for it, without its sleep
    "faust.tables.manager:TableManager.on_start":
        "365dd25fbc0e068499c89e526516c638693a2d143b6ac249f84a60f5267fec9d",
    # stores.RocksDBMemory wraps the first (the options of every database a store opens, which the
    # second asks it for) and sets the table factory again as the first does, on the shared cache
    "faust.stores.rocksdb:RocksDBOptions.as_options":
        "d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660",
    "faust.stores.rocksdb:RocksDBOptions.open":
        "ff87e92d69e2f487e2657c1df266543f4733d4acad3dd18fa5c86f239d8e340d",
    # commits.commit_log_on_demand: the only user of the module's `terminal`, its table only logged
    "faust.transport.consumer:Consumer._commit_offsets":
        "1a6979904118844111259d182ca1c6e92ccc16364ccbe55c58e59d6e254a7adb",
    # commits.commit_against_one_assignment is this method with the assignment read once
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._commit":
        "932852ce7a23f658804273d0296de6affaa7d21c19311c279712c2fae91a3b03",
}


def resolve(path: str) -> Any:
    import importlib

    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, name.split(".")):
        obj = getattr(obj, part)
    return obj


def _instance_has(cls: type, name: str) -> bool:
    """Whether `cls.__init__` (or a base's) assigns `self.<name>`: instance attributes made there."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            if f"self.{name} =" in inspect.getsource(init) or f"self.{name}:" in inspect.getsource(init):
                return True
        except (OSError, TypeError):
            continue
    return hasattr(cls, name)


def missing(required: tuple[tuple[str, str, str], ...] = REQUIRED, consumer: Any = None) -> list[str]:
    """Which of `required` cannot be found (empty: every patch has what it relies on).

    `consumer`: a consumer instance faust created, for the attributes its __init__ sets."""
    out = []
    for owner, attribute, how in required:
        try:
            obj = resolve(owner)
        except (ImportError, AttributeError):
            out.append(f"{owner} (needed for {attribute or 'itself'})")
            continue
        if how == "module":
            continue
        if how == "consumer" and consumer is not None:
            found = hasattr(consumer, attribute)
        elif how in ("consumer", "store", "instance"):
            found = _instance_has(obj, attribute)
        else:
            found = attribute in vars(obj)
        if not found:
            out.append(f"{owner}.{attribute}")
    return out


def source_hash(path: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(path)).encode()).hexdigest()


def source_drift(expected: dict[str, str] = PATCHED_SOURCES) -> list[str]:
    """Patched faust methods whose source is not the one the patch was written against."""
    return [path for path, digest in expected.items() if source_hash(path) != digest]
