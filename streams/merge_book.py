"""Merge bookkeeping of the customer stage, in a key space of its own.

Per customer id, a `MergeBook`: `merged_into` (this customer merged away: touches still resolved
to it follow the winner, alert actions too) and `awaiting` (losers whose hand-over this winner
waits for: nothing of it is final meanwhile). The stage keeps the books in their own `KeyedState`
with their own compacted changelog (`<app_id>-customer-merges`, `merge_state_topic`), keyed by
the customer id like the timelines but never mixed with them; values are JSON with a `version`.

Before, the books lived among the timelines in `<app_id>-customer-state` under the keys
`__alias__:<customer>` (value: the winner) and `__await__:<customer>` (value: the losers).
`migrate` moves such records when a partition is restored: into the books, with a tombstone for
the old key, both written by the next flush. A book restored from the new changelog is newer
than any old key of the same customer (old keys are only ever written by older workers, and a
customer's keys all live in its own partition), so it wins. A crash before that flush finds the
old keys again and migrates them again: the restore stays exact.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from .state import KeyedState

VERSION = 1
LEGACY_ALIAS = "__alias__:"
LEGACY_AWAIT = "__await__:"


@dataclass(frozen=True, slots=True)
class MergeBook:
    merged_into: str | None = None  # the winner this customer merged into
    awaiting: tuple[str, ...] = ()  # losers whose timelines this customer waits for

    def holds(self) -> bool:
        return self.merged_into is not None or bool(self.awaiting)


def encode_book(customer: str, book: MergeBook) -> bytes:
    return json.dumps({"version": VERSION, "merged_into": book.merged_into, "awaiting": list(book.awaiting)},
                      separators=(",", ":")).encode()


def decode_book(customer: str, raw: bytes) -> MergeBook:
    d = json.loads(raw)
    if d.get("version") != VERSION:
        raise ValueError(f"merge bookkeeping of {customer!r} has version {d.get('version')!r}; this worker reads "
                         f"{VERSION}: run a worker at least as new as the one that wrote it")
    return MergeBook(d["merged_into"], tuple(d["awaiting"]))


def legacy_key(key: str) -> tuple[str, str] | None:
    """(prefix, customer) for a bookkeeping key of the old shared key space, else None."""
    for prefix in (LEGACY_ALIAS, LEGACY_AWAIT):
        if key.startswith(prefix):
            return prefix, key[len(prefix):]
    return None


def migrate(timelines: KeyedState, books: KeyedState, restored: Iterable[str], restored_books: set[str],
            partition: int) -> list[str]:
    """Move the old bookkeeping keys among `restored` (keys just restored into `timelines`) into
    `books`, tombstoning them; `restored_books` are the customers `books` restored itself.
    Returns the other restored keys (the timelines)."""
    rest = []
    for key in restored:
        legacy = legacy_key(key)
        if legacy is None:
            rest.append(key)
            continue
        prefix, customer = legacy
        value: Any = timelines.get(key)
        timelines.delete(key, partition)
        if customer in restored_books or not value:
            continue
        book = books.get(customer) or MergeBook()
        if prefix == LEGACY_ALIAS:
            book = MergeBook(str(value), book.awaiting)
        else:
            book = MergeBook(book.merged_into, tuple(value))
        books.put(customer, book, partition)
    return rest
