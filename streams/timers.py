"""Event-time timers of the customer stage: for each partition, each customer's earliest deadline
(when its timeline must advance next: a session's inactivity gap, a journey's expiry, an absence
rule, a lifecycle timer), fired in deadline order as the watermark passes them.

Contract, both implementations:
- `arm(p, key, deadline)`: make sure `key` fires by `deadline`; a later deadline than the one
  armed changes nothing (the armed one fires first; the caller then advances the customer and
  arms its real next deadline).
- `due(p, watermark)`: removes and returns the armed `(deadline, key)` of partition `p` with
  deadline ≤ watermark, ordered by (deadline, key). Each key at most once.
- `hold(p, items)`: arms those again (the caller could not handle them yet).
- `drop(p)`: forgets partition `p` (revoked).
- `len()`: keys armed.

`HeapTimers` keeps everything in memory (a heap plus the armed deadline per key, ~200 bytes per
customer with a timer; a heap entry whose customer armed an earlier deadline since is skipped,
and the heap is rebuilt when such entries make it twice the armed count). `ScratchTimers` keeps
the deadlines in the worker's scratch SQLite file (like Flink's RocksDB timer service), with a
bounded cache of armed deadlines in front so that an event moving a deadline later costs one
dict lookup: memory stays flat however many customers have a timer. `BoundedTimers` is what a
worker with bounded state uses: a `HeapTimers` while at most `limit` keys are armed, moved once
into a `ScratchTimers` when more are (a SQLite statement per arm and per watermark cost the
customer stage half its time in `cem bench` with a few thousand customers, far below any bound).
None is durable: the stage re-arms every restored customer from its timeline.
"""
from __future__ import annotations

import heapq
from typing import Iterable, Protocol

from .state import scratch_db


class Timers(Protocol):
    def arm(self, partition: int, key: str, deadline: int) -> None: ...
    def due(self, partition: int, watermark: int) -> list[tuple[int, str]]: ...
    def hold(self, partition: int, items: Iterable[tuple[int, str]]) -> None: ...
    def drop(self, partition: int) -> None: ...
    def __len__(self) -> int: ...


class HeapTimers:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._armed: dict[int, dict[str, int]] = {}

    def arm(self, partition: int, key: str, deadline: int) -> None:
        armed = self._armed.setdefault(partition, {})
        if deadline < armed.get(key, 1 << 62):
            armed[key] = deadline
            heap = self._heaps.setdefault(partition, [])
            heapq.heappush(heap, (deadline, key))
            if len(heap) > 2 * len(armed) + 64:
                # superseded entries (a far deadline, such as a journey's expiry a week ahead,
                # left behind by each session that armed an earlier one) are never needed
                heap[:] = [(d, k) for k, d in armed.items()]
                heapq.heapify(heap)

    def due(self, partition: int, watermark: int) -> list[tuple[int, str]]:
        heap = self._heaps.get(partition)
        armed = self._armed.get(partition, {})
        out = []
        while heap and heap[0][0] <= watermark:
            deadline, key = heapq.heappop(heap)
            if armed.get(key) == deadline:  # else superseded by an earlier entry, already fired
                del armed[key]
                out.append((deadline, key))
        return out

    def hold(self, partition: int, items: Iterable[tuple[int, str]]) -> None:
        for deadline, key in items:
            self.arm(partition, key, deadline)

    def drop(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._armed.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(a) for a in self._armed.values())

    def armed_items(self) -> list[tuple[int, list[tuple[str, int]]]]:
        """(partition, [(key, armed deadline)]) for every partition: what is armed, no more."""
        return [(p, list(a.items())) for p, a in self._armed.items()]

    def entries(self) -> int:
        """Heap entries held (armed plus superseded ones not yet skipped)."""
        return sum(len(h) for h in self._heaps.values())


class ScratchTimers:
    def __init__(self, cache: int = 100_000) -> None:
        self._db = scratch_db("CREATE TABLE timers (part INTEGER, key TEXT, deadline INTEGER, "
                              "PRIMARY KEY (part, key)) WITHOUT ROWID")
        self._db.execute("CREATE INDEX timers_due ON timers (part, deadline)")
        self._cache_max = max(1, cache)
        self._known: dict[str, int] = {}  # key -> its armed deadline, for some keys (FIFO-bounded)

    def arm(self, partition: int, key: str, deadline: int) -> None:
        known = self._known.get(key)
        if known is not None and known <= deadline:
            return
        row = self._db.execute(
            "INSERT INTO timers VALUES (?, ?, ?) ON CONFLICT (part, key) DO UPDATE SET deadline = excluded.deadline "
            "WHERE excluded.deadline < timers.deadline RETURNING deadline", (partition, key, deadline)).fetchone()
        if row is None:  # an earlier deadline is armed already
            row = self._db.execute("SELECT deadline FROM timers WHERE part = ? AND key = ?",
                                   (partition, key)).fetchone()
        self._remember(key, row[0])

    def _remember(self, key: str, deadline: int) -> None:
        known = self._known
        known.pop(key, None)
        known[key] = deadline
        if len(known) > self._cache_max:
            for k in list(known)[: len(known) - int(self._cache_max * 0.9)]:
                del known[k]

    def due(self, partition: int, watermark: int) -> list[tuple[int, str]]:
        rows = self._db.execute("DELETE FROM timers WHERE part = ? AND deadline <= ? RETURNING deadline, key",
                                (partition, watermark)).fetchall()
        for _, key in rows:
            self._known.pop(key, None)
        rows.sort()
        return rows

    def hold(self, partition: int, items: Iterable[tuple[int, str]]) -> None:
        for deadline, key in items:
            self.arm(partition, key, deadline)

    def drop(self, partition: int) -> None:
        keys = [k for (k,) in self._db.execute("DELETE FROM timers WHERE part = ? RETURNING key", (partition,))]
        for k in keys:
            self._known.pop(k, None)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM timers").fetchone()[0]


class BoundedTimers:
    """`HeapTimers` until more than `limit` keys are armed, then every armed deadline moves
    into a `ScratchTimers` (cache `limit`) that serves from then on: memory stays within about
    `limit` timers, and a worker below the bound never pays for SQLite. Same contract."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._store: HeapTimers | ScratchTimers = HeapTimers()

    @property
    def spilled(self) -> bool:
        return isinstance(self._store, ScratchTimers)

    def arm(self, partition: int, key: str, deadline: int) -> None:
        self._store.arm(partition, key, deadline)
        store = self._store
        if isinstance(store, HeapTimers) and len(store) > self._limit:
            self._spill(store)

    def _spill(self, heap: HeapTimers) -> None:
        scratch = ScratchTimers(cache=self._limit)
        for partition, armed in heap.armed_items():
            for key, deadline in armed:
                scratch.arm(partition, key, deadline)
        self._store = scratch

    def due(self, partition: int, watermark: int) -> list[tuple[int, str]]:
        return self._store.due(partition, watermark)

    def hold(self, partition: int, items: Iterable[tuple[int, str]]) -> None:
        for deadline, key in items:
            self.arm(partition, key, deadline)

    def drop(self, partition: int) -> None:
        self._store.drop(partition)

    def __len__(self) -> int:
        return len(self._store)
