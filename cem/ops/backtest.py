"""`cem backtest`: replay stored touchpoints through the same detector code with a rules file,
and set what it would have fired beside what is stored — to judge a rule change before it ships.

`replay` is pure: per customer, touches in event-time order (the ideal order, with no lateness
or merges in flight), then event time advanced to `until` so absence timers fire. Moment ids are
deterministic (rule + first evidence), so replayed and stored moments compare by id.
`run_backtest` reads ClickHouse (touchpoints FINAL, customers resolved through identity merges)
and therefore needs the ClickHouse the sink writes: with embedded chdb, run it while no sink runs.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from cem.detect import Detector, Moment
from cem.ops.report import merge_aliases
from cem.rules import Rule, by_event_type
from cem.sessions import touch_of
from cem.sim.truth import resolve_aliases
from cem.sinks.clickhouse.client import connect_settings

CHANNEL_TUPLES = ("web", "store", "phone", "returns", "feedback", "email")


def replay(customers: Iterable[tuple[str, Iterable[Mapping[str, Any]]]], rules: tuple[Rule, ...],
           until_ms: int) -> list[Moment]:
    by_type = by_event_type(rules)
    by_name = {r.name: r for r in rules}
    out: list[Moment] = []
    for customer, events in customers:
        det = Detector()
        for ev in sorted(events, key=lambda e: (e["occurred_at"], e["event_id"])):
            t = touch_of(ev)
            new, _ = det.on_touch(by_type.get(t.event_type, ()), customer, t)
            out += new
        new, _ = det.on_watermark(by_name, customer, until_ms)
        out += new
    return out


@dataclass(frozen=True)
class RuleComparison:
    rule: str
    kind: str
    stored: int
    replayed: int
    both: int

    @property
    def only_stored(self) -> int:
        return self.stored - self.both

    @property
    def only_replayed(self) -> int:
        return self.replayed - self.both


def compare(rules: tuple[Rule, ...], replayed: list[Moment], stored: Iterable[tuple[str, str]]) -> list[RuleComparison]:
    """`stored`: (rule, moment_id) pairs from negative_moments. Rules of either side appear."""
    mine: dict[str, set[str]] = {}
    for m in replayed:
        mine.setdefault(m.rule, set()).add(m.moment_id)
    theirs: dict[str, set[str]] = {}
    for rule, mid in stored:
        theirs.setdefault(rule, set()).add(mid)
    kinds = {r.name: r.kind for r in rules}
    names = [r.name for r in rules] + sorted(set(theirs) - set(kinds))
    return [RuleComparison(n, kinds.get(n, "(not in file)"), len(theirs.get(n, ())), len(mine.get(n, ())),
                           len(mine.get(n, set()) & theirs.get(n, set()))) for n in names]


def _event(row: tuple) -> dict[str, Any]:
    eid, etype, channel, at, store_id, identifiers, *attrs, contact = row
    ev: dict[str, Any] = {"event_id": eid, "event_type": etype, "channel": channel, "occurred_at": at,
                          "store_id": store_id, "identifiers": identifiers, "contact": contact}
    ev[channel] = dict(zip(CHANNEL_TUPLES, attrs, strict=True))[channel]
    return ev


def run_backtest(settings: Any, rules: tuple[Rule, ...], since: datetime, until: datetime) -> list[RuleComparison]:
    client = connect_settings(settings)
    params = {"since": since, "until": until}
    try:
        aliases = merge_aliases(client)
        rows = client.query(
            "SELECT customer_id, event_id, event_type, channel, toUnixTimestamp64Milli(occurred_at), store_id, "
            "identifiers, web, store, phone, returns, feedback, email, contact FROM touchpoints FINAL "
            "WHERE occurred_at >= %(since)s AND occurred_at < %(until)s", parameters=params).result_rows
        stored = client.query("SELECT rule, moment_id FROM negative_moments FINAL "
                              "WHERE occurred_at >= %(since)s AND occurred_at < %(until)s",
                              parameters=params).result_rows
    finally:
        client.close()
    per_customer: dict[str, list[dict[str, Any]]] = {}
    for customer, *rest in rows:
        per_customer.setdefault(resolve_aliases(customer, aliases), []).append(_event(tuple(rest)))
    moments = replay(per_customer.items(), rules, int(until.timestamp() * 1000))
    return compare(rules, moments, stored)


def totals(rows: list[RuleComparison]) -> Counter:
    c: Counter = Counter()
    for r in rows:
        c["stored"] += r.stored
        c["replayed"] += r.replayed
        c["both"] += r.both
    return c
