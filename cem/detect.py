"""Negative-moment detection and service recovery for one customer (pure).

`Detector.on_touch` runs every rule on an arriving touch; `Detector.on_watermark` fires absence
rules and closes recovery windows as event time passes them. Decisions use event time only and
do not depend on arrival order within the lateness: count and sequence rules look for a window
or chain *containing* the new event among the remembered ones; absence rules remember expected
events seen early; recovery remembers recent positive signals.

Moments are deduplicated per (rule, group) within the rule's cooldown, and their ids hash the
rule and the first evidence event, so a replay yields the same ids (landing replaces them).
Positive signals: an order or purchase, NPS ≥ 9, CSAT ≥ 4, a call that ended resolved.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from .rules import Rule
from .sessions import Touch

SIGNAL_MEMORY_MS = 14 * 86_400_000


def is_positive(t: Touch) -> bool:
    if t.event_type in ("order_placed", "purchase"):
        return True
    if t.event_type == "survey_response":
        return (t.attrs.get("nps") or 0) >= 9 or (t.attrs.get("csat") or 0) >= 4
    return t.event_type == "call_ended" and bool(t.attrs.get("resolved"))


@dataclass
class Moment:
    moment_id: str
    rule: str
    customer_id: str
    channel: str
    store_id: str | None
    at: int
    evidence: list[str]
    recovery_deadline: int
    status: str = "open"  # open | recovered | unrecovered
    recovered_by: str | None = None
    trigger_received_at: int | None = None


def moment_id(rule: str, first_evidence: str) -> str:
    return hashlib.sha1(f"{rule}|{first_evidence}".encode()).hexdigest()[:16]


def _group(rule: Rule, t: Touch) -> str | None:
    g = rule.group_by
    if g == "customer":
        return "*"
    if g == "subject":
        return t.subject
    if g == "call_id":
        return t.attrs.get("call_id") or (t.subject if t.channel == "phone" else None)
    if g == "order_id":
        return t.attrs.get("_order_id")
    return t.attrs.get(g)


@dataclass
class Detector:
    counts: dict[str, list[list[Any]]] = field(default_factory=dict)     # rule|group -> [[at, eid]]
    seqs: dict[str, list[list[Any]]] = field(default_factory=dict)       # rule -> [[at, eid, step]]
    pending: list[list[Any]] = field(default_factory=list)               # [rule, eid, at, deadline, corr, ch, store]
    expected: dict[str, list[list[Any]]] = field(default_factory=dict)   # rule -> [[at, corr]]
    fired: dict[str, int] = field(default_factory=dict)                  # rule|group -> event time fired
    open: list[dict[str, Any]] = field(default_factory=list)             # moments awaiting recovery
    signals: list[list[Any]] = field(default_factory=list)               # [[at, eid]] positive signals

    # -- arrival ----------------------------------------------------------------------------------
    def on_touch(self, rules: Iterable[Rule], customer: str, t: Touch, received_at: int | None = None
                 ) -> tuple[list[Moment], list[Moment]]:
        """Returns (new moments, moments whose recovery status changed)."""
        new: list[Moment] = []
        for rule in rules:
            m = getattr(self, f"_{rule.kind}")(rule, customer, t)
            if m is not None:
                m.trigger_received_at = received_at
                new.append(m)
        changed: list[Moment] = []
        if is_positive(t):
            self.signals.append([t.at, t.event_id])
            for m in self.open:
                if m["at"] < t.at <= m["deadline"] and m["status"] == "open":
                    m["status"], m["by"] = "recovered", t.event_id
                    changed.append(self._moment(m))
            self.open = [m for m in self.open if m["status"] == "open"]
        for m in new:  # a positive signal may have arrived before the moment (out of order)
            sig = next((s for s in sorted(self.signals) if m.at < s[0] <= m.recovery_deadline), None)
            if sig is not None:
                m.status, m.recovered_by = "recovered", sig[1]
            else:
                self.open.append(self._state(m))
        return new, changed

    def _fire(self, rule: Rule, customer: str, t: Touch, group: str, at: int, evidence: list[str]) -> Moment | None:
        key = f"{rule.name}|{group}"
        last = self.fired.get(key)
        if last is not None and abs(at - last) < rule.cooldown_ms:
            return None
        self.fired[key] = at
        return Moment(moment_id(rule.name, evidence[0]), rule.name, customer, t.channel, t.store_id, at, evidence,
                      at + rule.recovery_ms)

    def _single(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        if rule.match and rule.match(t.event_type, t.channel, t.attrs):
            return self._fire(rule, customer, t, t.subject, t.at, [t.event_id])
        return None

    def _count(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        if not (rule.match and rule.match(t.event_type, t.channel, t.attrs)):
            return None
        group = _group(rule, t)
        if group is None:
            return None
        key = f"{rule.name}|{group}"
        seen = self.counts.setdefault(key, [])
        if any(e[1] == t.event_id for e in seen):
            return None
        seen.append([t.at, t.event_id, t.channel])
        seen.sort()  # pruned by the watermark only: an event may arrive up to the lateness late
        for i in range(len(seen)):  # a window of `threshold` events that contains the new one
            j = i + rule.threshold - 1
            if j < len(seen) and seen[j][0] - seen[i][0] <= rule.window_ms and \
                    any(e[1] == t.event_id for e in seen[i:j + 1]):
                window = seen[i:j + 1]
                return self._fire(rule, customer, t, group, window[-1][0], [e[1] for e in window])
        return None

    def _sequence(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        steps = [i for i, s in enumerate(rule.steps) if s(t.event_type, t.channel, t.attrs)]
        if not steps:
            return None
        seen = self.seqs.setdefault(rule.name, [])
        for i in steps:
            seen.append([t.at, t.event_id, i])
        return self._sequence_chain(rule, customer, t)

    def _sequence_chain(self, rule: Rule, customer: str, t: Touch | None) -> Moment | None:
        """The earliest complete chain step0 ≤ step1 ≤ … within the rule's span, in event time;
        fired when it contains `t` (or, with t None after a merge, any chain the cooldown allows)."""
        seen = self.seqs.get(rule.name) or []
        seen.sort()  # pruned by the watermark only
        chain: list[list[Any]] = []
        for e in seen:
            if e[2] == len(chain) and (not chain or (e[0] >= chain[-1][0] and e[0] - chain[0][0] <= rule.within_ms)):
                chain.append(e)
                if len(chain) == len(rule.steps):
                    if t is None or any(c[1] == t.event_id for c in chain):
                        last = t or Touch(chain[-1][0], chain[-1][1], "", rule.steps[-1].channel or "", "*")
                        m = self._fire(rule, customer, last, "*", chain[-1][0], [c[1] for c in chain])
                        if m is not None or t is not None:
                            return m
                    chain = []
            elif e[2] == 0:
                chain = [e]
        return None

    def _absence(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        corr = t.attrs.get(rule.correlate) if rule.correlate else "*"
        if rule.expected and rule.expected(t.event_type, t.channel, t.attrs):
            self.expected.setdefault(rule.name, []).append([t.at, corr])
            self.pending = [p for p in self.pending if not (p[0] == rule.name and p[4] == corr
                                                           and p[2] <= t.at <= p[3])]
        if rule.trigger and rule.trigger(t.event_type, t.channel, t.attrs):
            deadline = t.at + rule.within_ms
            early = any(c == corr and t.at <= at <= deadline for at, c in self.expected.get(rule.name, []))
            if not early and not any(p[1] == t.event_id for p in self.pending):
                self.pending.append([rule.name, t.event_id, t.at, deadline, corr, t.channel, t.store_id])
        return None

    def recheck(self, rules: Iterable[Rule], customer: str) -> list[Moment]:
        """After a merge joined two customers' counts: fire the windows that only the union
        fills (the same ids a single customer would have produced), and drop absence timers whose
        expected event the other side had already seen."""
        self.pending = [p for p in self.pending
                        if not any(c == p[4] and p[2] <= at <= p[3] for at, c in self.expected.get(p[0], []))]
        new = []
        for rule in rules:
            if rule.kind == "sequence":  # a chain whose steps were split between the two profiles
                m = self._sequence_chain(rule, customer, None)
                if m is not None:
                    self.open.append(self._state(m))
                    new.append(m)
                continue
            if rule.kind != "count":
                continue
            for key, seen in list(self.counts.items()):
                if not key.startswith(rule.name + "|"):
                    continue
                group = key.split("|", 1)[1]
                seen.sort()
                for i in range(len(seen) - rule.threshold + 1):
                    window = seen[i:i + rule.threshold]
                    if window[-1][0] - window[0][0] <= rule.window_ms:
                        last = window[-1]
                        t = Touch(last[0], last[1], "", last[2] if len(last) > 2 else "", group)
                        m = self._fire(rule, customer, t, group, last[0], [e[1] for e in window])
                        if m is not None:
                            self.open.append(self._state(m))
                            new.append(m)
                        break
        return new

    # -- event time passes ------------------------------------------------------------------------
    def on_watermark(self, rules_by_name: dict[str, Rule], customer: str, wm: int) -> tuple[list[Moment], list[Moment]]:
        if not (self.pending or self.open or self.signals or self.expected or self.fired or self.counts or self.seqs):
            return [], []
        new: list[Moment] = []
        keep = []
        for p in self.pending:
            name, eid, at, deadline, corr, ch, store = p
            if deadline <= wm and name in rules_by_name:
                rule = rules_by_name[name]
                t = Touch(at, eid, "", ch, corr, store)
                m = self._fire(rule, customer, t, f"{corr}|{eid}", deadline, [eid])
                if m is not None:
                    sig = next((s for s in sorted(self.signals) if m.at < s[0] <= m.recovery_deadline), None)
                    if sig is not None:
                        m.status, m.recovered_by = "recovered", sig[1]
                    else:
                        self.open.append(self._state(m))
                    new.append(m)
            else:
                keep.append(p)
        self.pending = keep
        changed = []
        for o in self.open:
            if o["deadline"] <= wm:
                o["status"] = "unrecovered"
                changed.append(self._moment(o))
        self.open = [o for o in self.open if o["status"] == "open"]
        horizon = wm - SIGNAL_MEMORY_MS
        self.signals = [s for s in self.signals if s[0] >= horizon]
        for name in list(self.expected):
            known = rules_by_name.get(name)
            keep_for = known.within_ms if known else 0
            self.expected[name] = [e for e in self.expected[name] if e[0] >= wm - keep_for]
        self.fired = {k: v for k, v in self.fired.items() if v >= wm - 7 * 86_400_000}
        for store in (self.counts, self.seqs):
            for key in list(store):
                known = rules_by_name.get(key.split("|", 1)[0])
                span = 2 * max(known.window_ms, known.within_ms) if known else 0
                store[key] = [e for e in store[key] if e[0] >= wm - span]
                if not store[key]:
                    del store[key]
        for name in [n for n, v in self.expected.items() if not v]:
            del self.expected[name]
        return new, changed

    def next_deadline(self) -> int | None:
        ds = [p[3] for p in self.pending] + [m["deadline"] for m in self.open]
        return min(ds) if ds else None

    # -- (de)serialization ------------------------------------------------------------------------
    @staticmethod
    def _state(m: Moment) -> dict[str, Any]:
        return {"id": m.moment_id, "rule": m.rule, "c": m.customer_id, "ch": m.channel, "st": m.store_id,
                "at": m.at, "ev": m.evidence, "deadline": m.recovery_deadline, "status": m.status, "by": None}

    @staticmethod
    def _moment(d: dict[str, Any]) -> Moment:
        return Moment(d["id"], d["rule"], d["c"], d["ch"], d["st"], d["at"], d["ev"], d["deadline"], d["status"],
                      d.get("by"))

    def to_json(self) -> dict[str, Any]:
        return {"c": self.counts, "q": self.seqs, "p": self.pending, "e": self.expected, "f": self.fired,
                "o": self.open, "s": self.signals}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "Detector":
        if not d:
            return cls()
        return cls(d["c"], d["q"], d["p"], d["e"], d["f"], d["o"], d["s"])

    def empty(self) -> bool:
        return not (self.counts or self.seqs or self.pending or self.open or self.signals or self.expected)
