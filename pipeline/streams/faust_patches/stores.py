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
