"""A dict that keeps at most `max_live` entries as Python objects and the rest in a scratch
SQLite file: the identity graph's maps (identifier -> profile, profile -> members, profile ->
first sighting), so a worker's memory stays flat however many identifiers it has seen.

Contract:
- Behaves like the dict operations the identity graph uses: `get`, `[]`, `in`, `setdefault`,
  `pop`, `[]=`, `del`, `len`, iteration (`keys`/`values`/`items`, live entries first).
- A key lives in exactly one place, live or spilled (moving it back on a read deletes the spilled
  copy), so `len` is exact.
- Eviction is first-in-first-out over the live entries (a value read back from the spill counts
  as new), in batches of 10 % of `max_live` (one SQLite transaction each). It happens only when
  an entry becomes live (inserted, or read back by `get`/`in`/`setdefault`) and never to that
  entry. So a mutable value (a member set) returned by `get`/`setdefault` stays live, and its
  in-place changes are kept, until the next call on this map; the graph mutates such a value at
  once. An evicted value is encoded as it is at that moment. Hits take no reordering (FIFO, not
  LRU): a hot key evicted is read back once per `max_live` inserts, and a hit stays one dict
  lookup.
- Thread safety: one writer thread and readers on other threads (the replica: its consumer
  thread applies the changelog while the worker looks identifiers up). Reads of live entries
  take no lock; everything that touches SQLite or moves entries holds the map's lock, and moves
  a key so that it is always live or counted in the spill (never in neither place).
- Memory: the live entries, plus a fixed 4 MiB filter of spilled keys once anything is spilled
  (so looking up a key that was never spilled, such as a new identifier, touches no SQLite).
- Not durable: the spill is a private temporary file, deleted when the process ends. The
  changelog stays the truth; a restart replays it.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Generic, Iterator, TypeVar

from .state import KeyFilter, scratch_db

V = TypeVar("V")
_MISSING: Any = object()


class SpillMap(Generic[V]):
    def __init__(self, max_live: int, encode: Callable[[V], Any] = lambda v: v,
                 decode: Callable[[Any], V] = lambda v: v):
        if max_live < 1:
            raise ValueError(f"max_live must be at least 1, got {max_live}")
        self._max = max_live
        self._encode = encode
        self._decode = decode
        self._live: dict[str, V] = {}  # insertion order = eviction order
        self._spilled = 0               # rows in the spill
        self._filter = KeyFilter()      # keys that may be spilled: a new identifier costs no query
        self._db = scratch_db("CREATE TABLE kv (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
        self._lock = threading.Lock()
        self.evicted = 0                # values written to the spill so far (metrics)
        self.reloaded = 0               # values read back

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        value = self._live.get(key, _MISSING)
        if value is not _MISSING:
            return value
        if not self._spilled or not self._may_hold(key):
            return default
        with self._lock:
            value = self._reload(key)
        return default if value is _MISSING else value

    def __getitem__(self, key: str) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return len(self._live) + self._spilled

    @property
    def live(self) -> int:
        return len(self._live)

    def items(self) -> Iterator[tuple[str, V]]:
        """Every entry, live ones first; a snapshot (spilled values decoded, not reloaded)."""
        with self._lock:
            live = list(self._live.items())
            spilled = self._db.execute("SELECT key, value FROM kv").fetchall() if self._spilled else []
        yield from live
        for key, data in spilled:
            yield key, self._decode(data)

    def keys(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    __iter__ = keys

    def values(self) -> Iterator[V]:
        return (v for _, v in self.items())

    def __eq__(self, other: object) -> bool:
        items = getattr(other, "items", None)
        if items is None:
            return NotImplemented
        return dict(self.items()) == dict(items())

    # -- writes ------------------------------------------------------------------------------
    def __setitem__(self, key: str, value: V) -> None:
        with self._lock:
            if key not in self._live:
                if self._spilled and self._may_hold(key):
                    self._drop(key)
                self._live[key] = value
                self._evict(protect=key)
            else:
                self._live[key] = value

    def setdefault(self, key: str, default: V) -> V:
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        self[key] = default
        return default

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        with self._lock:
            value = self._live.pop(key, _MISSING)
            if value is _MISSING and self._spilled and self._may_hold(key):
                value = self._reload(key, keep=False)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    # -- the spill (lock held) ------------------------------------------------------------------
    def _may_hold(self, key: str) -> bool:
        return self._filter.may_hold(key)

    def _reload(self, key: str, keep: bool = True) -> Any:
        value = self._live.get(key, _MISSING)  # another thread may have brought it back
        if value is not _MISSING:
            return value
        row = self._db.execute("DELETE FROM kv WHERE key = ? RETURNING value", (key,)).fetchone()
        if row is None:
            return _MISSING
        value = self._decode(row[0])
        if keep:
            self._live[key] = value  # live before the count drops: a lock-free reader that
        self._spilled -= 1           # sees no spill must find every key live
        self.reloaded += 1
        if keep:
            self._evict(protect=key)
        return value

    def _drop(self, key: str) -> None:
        if self._db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
            self._spilled -= 1

    def _evict(self, protect: str | None = None) -> None:
        if len(self._live) <= self._max:
            return
        n = len(self._live) - int(self._max * 0.9)
        rows = [(key, self._encode(self._live[key]))
                for key in itertools.islice(self._live, n + 1) if key != protect][:n]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO kv VALUES (?, ?)", rows)
        self._db.execute("COMMIT")
        self._filter.add(key for key, _ in rows)
        # counted, filtered and written before they leave the live dict: a lock-free reader
        # never finds a key in neither place
        self._spilled += len(rows)
        for key, _ in rows:
            del self._live[key]
        self.evicted += len(rows)
