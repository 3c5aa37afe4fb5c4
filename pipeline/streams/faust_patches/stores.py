"""6. Table stores by partition."""
from __future__ import annotations

from typing import Any


class PartitionStore:
    """Reads and writes of a faust table's store for an explicit partition.

    Why: faust's stores take the partition from `current_event()` (faust/stores/rocksdb.py:474-506),
    which is None in a batch body (`Stream.take_events` fills its buffer from another task); without
    it a RocksDB read tries every partition's database, and a write raises. The writes are what
    `Store._set` does (the partition's database, the key index), the changelog records are sent by
    the worker itself (see `aiokafka_producer`). Can go: if faust's stores accept a partition.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data
        self.rocksdb = hasattr(self.store, "_db_for_partition")

    def get(self, partition: int, key: bytes) -> bytes | None:
        if self.rocksdb:
            return self.store._db_for_partition(partition).get(key)
        return self.store.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        if self.rocksdb:
            self.store._db_for_partition(partition).put(key, value)
            self.store._key_index[key] = partition
        else:
            self.store.data[key] = value

    def items(self) -> Any:
        return self.table.items()

    def on_changelog_sent(self, fut: Any, count: int = 1) -> None:
        """The RocksDB offset bookkeeping of `Table._on_changelog_sent`, for a record or for a
        batch of `count` records (its future gives the first one's offset)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        meta = fut.result()
        self.store.set_persisted_offset(meta.topic_partition, meta.offset + count - 1)


class RocksDBMemory:
    """15. One memory budget for all the worker's RocksDB databases.

    Symptom: faust opens one database per table and partition (12 for this worker's two tables at
    6 partitions) and gives each its own block cache (`RocksDBOptions.as_options` makes a new
    `rocksdict.Cache` per open, faust/stores/rocksdb.py:170) and its own memtables. Every version
    a resource's state is written in stays in a memtable until that one fills: at 100 events/s the
    worker's RSS climbed ~11 MB a minute for about 8 minutes after each start and levelled off
    ~90 MB higher (the soak of the previous round), and the sum of the per-database limits
    (12 x (64 + 2 x 16) MB) is far above what a pod's memory limit can allow for. Here every
    database the stores open shares one LRU cache of `megabytes`, and their memtables are charged
    to it through one write-buffer manager that flushes when they reach a quarter of it (as Kafka
    Streams' BoundedMemoryRocksDBConfig does). The options are faust's, with the table factory
    set again on the shared cache, the write-buffer manager added and each memtable's size set
    from the budget.
    Upstream: faust-streaming 0.15.3 has no option for a shared cache; no issue filed.
    Can go: when faust's RocksDBOptions takes a cache and a write-buffer manager.
    """

    MEMTABLE_SHARE = 4  # the memtables flush at a quarter of the budget ...
    MEMTABLE_PARTS = 16  # ... and one database's at a sixteenth: RocksDB grows a memtable in blocks
    # of an eighth of its size, each charged to the cache whole (16 MB memtables: 2 MB a block)

    def __init__(self, megabytes: int) -> None:
        import rocksdict

        self.capacity = megabytes * 1024 * 1024
        self.cache = rocksdict.Cache(self.capacity)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            self.capacity // self.MEMTABLE_SHARE, False, self.cache)
        self.memtable_bytes = self.capacity // self.MEMTABLE_PARTS

    def install(self, store: Any) -> None:
        """Give a faust rocksdb store (`table.data`) the shared budget for every database it opens;
        other stores (memory://) are left as they are."""
        options = getattr(store, "rocksdb_options", None)
        if options is None or not getattr(options, "use_rocksdict", False):
            return
        import rocksdict

        faust_as_options = options.as_options
        memory = self

        def as_options() -> Any:
            db_options = faust_as_options()
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(options.bloom_filter_size, block_based=True)
            table.set_block_cache(memory.cache)
            table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
            db_options.set_block_based_table_factory(table)
            db_options.set_write_buffer_manager(memory.write_buffers)
            db_options.set_write_buffer_size(memory.memtable_bytes)
            return db_options

        options.as_options = as_options

    def usage(self) -> int:
        """Bytes held in the shared cache now, memtables included."""
        return int(self.cache.get_usage())
