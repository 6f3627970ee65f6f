"""Keyed state per input partition, held in memory as live Python objects and made durable by a
changelog the caller writes (the worker: its own compacted Kafka topic through confluent-kafka).

Why not a Faust Table: every table write costs a JSON encode plus an aiokafka send of its own
(~100 µs of asyncio per write, measured), and every read a decode; here a value stays a Python
object and is encoded once per changed key per flush.

Contract:
- `open(p)` before the first record of partition p since it was assigned: restores p's keys from
  `load(p)` (latest value per key wins; a None value is a tombstone) and returns the restored
  keys so the caller can re-arm its timers; does nothing while p stays open.
- `put`/`delete` change memory at once and mark the key dirty under partition p (a key belongs to
  the partition of the record that wrote it).
- `flush()` hands `write(p, key, value_bytes | None)` one call per dirty key with its value now.
  The caller makes those writes durable before it acks the input records, so the changelog is
  never behind the committed offsets. It may be ahead of them: updates must be idempotent when
  input is replayed (the customer stage dedups events by id).
- `close(p)` (partition revoked) forgets p's keys without writing; `open(p)` restores them again.
- **bounded memory** (`max_live` values and/or `max_live_bytes`, with a `Spill`): at most
  `max_live` values stay live objects, together at most `max_live_bytes` as last encoded (a value
  never flushed counts as its previous encoding, or 0); after each `flush()` (so only clean
  values), the least recently used beyond either bound are encoded into the spill (a scratch
  on-disk store, not durable: the changelog stays the truth) and decoded again on their next
  `get`. A key is live or spilled, never both; a spilled key's partition is in its spill row, so
  a key that is not live takes no memory. Like Kafka Streams' or Flink's RocksDB state: memory stays
  flat however many customers a worker holds, at one encode + decode per customer that comes
  back after being evicted. `trim()` evicts the same way between flushes (after a restore).
"""
from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable, Iterator

Loader = Callable[[int], Iterable[tuple[bytes, bytes | None]]]
Writer = Callable[[int, bytes, bytes | None], None]
_MISSING = object()


def scratch_db(schema: str) -> sqlite3.Connection:
    """A private SQLite database in a temporary file, deleted when the process ends
    (`sqlite3.connect("")`), with no journal and no fsync: scratch space, never durable.
    The caller serialises access (it may come from more than one thread)."""
    db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(schema)
    return db


class KeyFilter:
    """A fixed-size bit filter of keys put in a spill (4 MiB, allocated at the first `add`): a
    key whose bit is clear was never spilled, so looking it up costs no SQLite query. One hash
    per key; false positives ~ distinct keys ever added / 2^25 (1 % at 330 k). Bits are never cleared (a key
    read back or deleted costs one query more when next asked for). `may_hold` takes no lock."""

    BITS = 1 << 25

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, keys: Iterable[str]) -> None:
        if not self._bits:
            self._bits = bytearray(self.BITS >> 3)
        bits = self._bits
        for key in keys:
            h = hash(key) & (self.BITS - 1)
            bits[h >> 3] |= 1 << (h & 7)

    def may_hold(self, key: str) -> bool:
        if not self._bits:
            return False
        h = hash(key) & (self.BITS - 1)
        return bool(self._bits[h >> 3] & (1 << (h & 7)))


class Spill:
    """Scratch store of evicted values and their partitions (`scratch_db`), with a count per
    partition and a `KeyFilter`. Not durable and never read after a restart. Used from the
    agent's loop and from flush threads, never at the same time."""

    def __init__(self) -> None:
        self._db = scratch_db("CREATE TABLE kv (key TEXT PRIMARY KEY, part INTEGER, value BLOB) WITHOUT ROWID")
        self._db.execute("CREATE INDEX kv_part ON kv (part)")
        self._filter = KeyFilter()
        self.count: dict[int, int] = {}  # partition -> rows

    def put_many(self, rows: list[tuple[str, int, bytes]]) -> None:
        """Rows of keys not in the spill (the caller holds each key in one place)."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO kv VALUES (?, ?, ?)", rows)
        self._db.execute("COMMIT")
        self._filter.add(key for key, _, _ in rows)
        for _, part, _ in rows:
            self.count[part] = self.count.get(part, 0) + 1

    def take(self, key: str) -> tuple[int, bytes] | None:
        """Remove `key` and return (partition, value), or None if it is not spilled."""
        if not self._filter.may_hold(key):
            return None
        row = self._db.execute("DELETE FROM kv WHERE key = ? RETURNING part, value", (key,)).fetchone()
        if row is None:
            return None
        self.count[row[0]] -= 1
        return row[0], row[1]

    def holds(self, key: str) -> bool:
        return self._filter.may_hold(key) and \
            self._db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None

    def keys(self, partition: int) -> list[str]:
        if not self.count.get(partition):
            return []
        return [k for (k,) in self._db.execute("SELECT key FROM kv WHERE part = ?", (partition,))]

    def drop(self, partition: int) -> None:
        if self.count.pop(partition, 0):
            self._db.execute("DELETE FROM kv WHERE part = ?", (partition,))

    def __len__(self) -> int:
        return sum(self.count.values())


class KeyedState:
    def __init__(self, encode: Callable[[str, Any], bytes], decode: Callable[[str, bytes], Any],
                 load: Loader | None = None, write: Writer | None = None, *,
                 max_live: int = 0, max_live_bytes: int = 0):
        self._encode = encode
        self._decode = decode
        self._load = load
        self._write = write
        self._max_live = max_live or (1 << 62)
        self._max_bytes = max_live_bytes or (1 << 62)
        self._spill = Spill() if max_live > 0 or max_live_bytes > 0 else None
        self._values: dict[str, Any] = {}  # live objects, least recently used first
        self._sizes: dict[str, int] = {}   # live key -> bytes of its last encoding
        self.live_bytes = 0                # their sum
        # live key -> its partition; a spilled key's partition is in the spill (a key is held in
        # exactly one of the two), so a customer not live costs no memory
        self._owner: dict[str, int] = {}
        self.evicted = 0                   # evictions so far (metrics)
        self.reloaded = 0                  # spilled values decoded again
        self._open: set[int] = set()
        self._dirty: dict[str, int] = {}

    # -- partitions ------------------------------------------------------------------------
    def open(self, partition: int) -> list[str]:
        if partition in self._open:
            return []
        self._open.add(partition)
        if self._load is None:
            return []
        latest: dict[str, bytes | None] = {}
        for raw_key, value in self._load(partition):
            latest[raw_key.decode()] = value
        restored = []
        spilled = []
        for key, value in latest.items():
            if value is None:
                continue
            restored.append(key)
            if self._spill is not None and (len(self._values) >= self._max_live
                                            or self.live_bytes + len(value) > self._max_bytes):
                spilled.append((key, partition, value))  # decoded when first asked for
            else:
                self._values[key] = self._decode(key, value)
                self._owner[key] = partition
                self._sized(key, len(value))
        if spilled and self._spill is not None:  # (only a spill takes spilled keys)
            self._spill.put_many(spilled)
        return restored

    def close(self, partition: int) -> None:
        self._open.discard(partition)
        for key in [k for k, p in self._owner.items() if p == partition]:
            self._values.pop(key, None)
            self._sized(key, 0)
            del self._owner[key]
        for key in [k for k, p in self._dirty.items() if p == partition]:
            del self._dirty[key]
        if self._spill is not None:
            self._spill.drop(partition)

    def is_open(self, partition: int) -> bool:
        return partition in self._open

    # -- values ------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        if self._spill is None:
            return self._values.get(key, default)
        value = self._values.pop(key, _MISSING)
        if value is not _MISSING:
            self._values[key] = value  # most recently used now
            return value
        row = self._spill.take(key)
        if row is None:
            return default
        partition, data = row
        value = self._values[key] = self._decode(key, data)
        self._owner[key] = partition
        self._sized(key, len(data))
        self.reloaded += 1
        return value

    def __contains__(self, key: str) -> bool:
        return key in self._owner or (self._spill is not None and self._spill.holds(key))

    def __len__(self) -> int:
        return len(self._owner) + (len(self._spill) if self._spill is not None else 0)

    @property
    def spills(self) -> bool:
        """True when memory is bounded (values beyond a bound go to the spill)."""
        return self._spill is not None

    @property
    def live(self) -> int:
        """Values held as live objects (the rest are spilled)."""
        return len(self._values)

    def counts(self) -> dict[int, int]:
        """partition -> keys held, live or spilled (read from another thread: may be a moment old)."""
        out: dict[int, int] = {}
        for p in list(self._owner.values()):
            out[p] = out.get(p, 0) + 1
        if self._spill is not None:
            for p, n in list(self._spill.count.items()):
                if n:
                    out[p] = out.get(p, 0) + n
        return out

    def keys(self, partition: int | None = None) -> Iterator[str]:
        live = [k for k, p in self._owner.items() if partition is None or p == partition]
        if self._spill is None:
            return iter(live)
        parts = [partition] if partition is not None else list(self._spill.count)
        return iter(live + [k for p in parts for k in self._spill.keys(p)])

    def put(self, key: str, value: Any, partition: int) -> None:
        if self._spill is not None and self._values.pop(key, _MISSING) is _MISSING:
            self._spill.take(key)  # a spilled copy is replaced (it is held in one place)
        self._values[key] = value
        self._owner[key] = partition
        self._dirty[key] = partition

    def delete(self, key: str, partition: int) -> None:
        held = self._values.pop(key, _MISSING) is not _MISSING
        if not held and self._spill is not None:
            held = self._spill.take(key) is not None
        if held:
            self._owner.pop(key, None)
            self._sized(key, 0)
            self._dirty[key] = partition

    def _sized(self, key: str, size: int) -> None:
        """Record a live key's encoded size (0: not live any more)."""
        self.live_bytes += size - self._sizes.pop(key, 0)
        if size:
            self._sizes[key] = size

    # -- durability --------------------------------------------------------------------------
    def flush(self) -> int:
        """Write every dirty key's current value (or tombstone); returns how many."""
        dirty, self._dirty = self._dirty, {}
        if self._write is not None:
            for key, partition in dirty.items():
                value = self._values.get(key)
                data = None if value is None else self._encode(key, value)
                if data is not None and self._spill is not None:
                    self._sized(key, len(data))
                self._write(partition, key.encode(), data)
        self.trim()
        return len(dirty)

    def trim(self) -> int:
        """Spill the least recently used clean values beyond `max_live` or `max_live_bytes` (down
        to 90 % of each, so evictions come in batches); returns how many."""
        if self._spill is None or (len(self._values) <= self._max_live and self.live_bytes <= self._max_bytes):
            return 0
        count = len(self._values) - int(self._max_live * 0.9)
        excess = self.live_bytes - int(self._max_bytes * 0.9)
        chosen = []
        for key in self._values:  # the oldest first; collected, then popped (no change while iterating)
            if count <= 0 and excess <= 0:
                break
            if key in self._dirty:
                continue  # changed since the last flush: stays until written
            chosen.append(key)
            count -= 1
            excess -= self._sizes.get(key, 0)
        rows = []
        for key in chosen:
            rows.append((key, self._owner.pop(key), self._encode(key, self._values.pop(key))))
            self._sized(key, 0)
        if rows:
            self._spill.put_many(rows)
        self.evicted += len(rows)
        return len(rows)
