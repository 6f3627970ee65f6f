"""Landing's side of an erasure: remove a customer's rows from every ClickHouse table and write
the audit row (`privacy_erasures`).

An `Erasure` (cem.privacy) names profile ids and the salted SHA-256 digests of the customer's
identifiers. Every table is cleaned with a lightweight `DELETE FROM … WHERE …` (rows vanish from
every query at once; ClickHouse drops them from disk when it next merges their parts) by
customer id, and where a table carries identifiers (touchpoints' `identifiers.*`, a web or phone
session's subject, a merge's moved identifiers or refused identifier) by the digest ClickHouse
computes of them with the same salt, so no identifier travels to do it.

Guarantees: idempotent (a replayed erasure deletes again what may have landed since and keeps
the first audit row); the audit row is written last, so a row in `privacy_erasures`
means every table was cleaned. Rollups hold uniqExact states of event, moment and journey ids —
counts, no identifier — and are left as they are (README "Privacy: consent and erasure").
A failure raises (ClickHouse away): landing retries the erasure before it commits its offset.
Both of ClickHouse's forms work in chdb 4.4 (checked): lightweight `DELETE FROM` is used because it
is immediate and cheap; `ALTER TABLE … DELETE` would rewrite every part holding a match at once.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Callable

from cem.identity import PRECEDENCE
from cem.privacy import Erasure, record_of
from .clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
_SAFE = re.compile(r"^[A-Za-z0-9:_.\-]{1,200}$")
#: Session subjects that are identifiers: a web session's browser, a call without call id, a
#: return without RMA (cem.sessions.subject_of).
_SUBJECT_KINDS = ("anonymous_id", "device_id", "phone_hash", "order_id")


def _quote(values: tuple[str, ...] | list[str]) -> str:
    for v in values:
        if not _SAFE.match(v):  # ids and hex digests only: anything else is not ours
            raise ValueError(f"refusing erasure value {v[:40]!r}: not an id or digest")
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _digest(salt: str, expr: str) -> str:
    return f"lower(hex(SHA256(concat('{salt}', {expr}))))"


def predicates(e: Erasure) -> dict[str, str]:
    """Table -> WHERE clause selecting the erased customer's rows."""
    if not _SAFE.match(e.salt):
        raise ValueError("refusing an erasure whose salt is not hex")
    by_customer = f"customer_id IN {_quote(e.profiles)}" if e.profiles else ""
    digests = _quote(e.digests) if e.digests else ""

    def either(*parts: str) -> str:
        return " OR ".join(f"({p})" for p in parts if p)

    ident = [f"{_digest(e.salt, f'{chr(39)}{k}:{chr(39)}, identifiers.{k}')} IN {digests}" for k in PRECEDENCE] \
        if digests else []
    subject = [f"{_digest(e.salt, f'{chr(39)}{k}:{chr(39)}, subject')} IN {digests}" for k in _SUBJECT_KINDS] \
        if digests else []
    merges = [f"winner IN {_quote(e.profiles)} OR loser IN {_quote(e.profiles)}" if e.profiles else "",
              f"{_digest(e.salt, 'loser')} IN {digests} OR arrayExists(x -> {_digest(e.salt, 'x')} IN {digests}, moved)"
              if digests else ""]
    out = {"touchpoints": either(by_customer, *ident), "sessions": either(by_customer, *subject),
           "journeys": by_customer, "negative_moments": by_customer, "alerts": by_customer,
           "customer_lifecycle": by_customer, "customers": by_customer, "identity_merges": either(*merges)}
    return {t: w for t, w in out.items() if w}


class Eraser:
    def __init__(self, client: ClickHouse, clock: Callable[[], float] = time.time):
        self._ch = client
        self._clock = clock

    def apply(self, e: Erasure) -> dict[str, int]:
        """Delete the erased customer's rows from every table, then record the erasure; returns
        rows deleted per table."""
        deleted: dict[str, int] = {}
        for table, where in predicates(e).items():
            n = int(self._ch.query(f"SELECT count() FROM {table} WHERE {where}").result_rows[0][0])
            if n:
                self._ch.command(f"DELETE FROM {table} WHERE {where}")
            deleted[table] = n
        erasure_id = _quote([e.request.erasure_id])[1:-1]
        prior = self._ch.query(f"SELECT count() FROM privacy_erasures WHERE erasure_id = {erasure_id}")
        if prior.result_rows[0][0]:
            log.info("erasure %s replayed: tables cleaned again, first audit row kept", e.request.erasure_id)
            return deleted
        row = record_of(e, deleted, int(self._clock() * 1000)).as_row()
        self._ch.raw_insert("privacy_erasures", None, insert_block=json.dumps(row).encode(), fmt="JSONEachRow")
        log.info("erasure %s done: %s", e.request.erasure_id, ", ".join(f"{t} {n}" for t, n in deleted.items()))
        return deleted
