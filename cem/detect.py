"""Negative-moment detection and service recovery for one customer (pure).

`Detector.on_touch` runs every rule on an arriving touch; `Detector.on_watermark` fires absence
rules and closes recovery windows as event time passes them. Decisions use event time only and
do not depend on arrival order within the lateness: count and sequence rules look for a window
or chain *containing* the new event among the remembered ones; absence rules remember expected
events seen early; recovery remembers recent positive signals. After an identity merge
(`absorb`, then `recheck`) the signals of either side recover the open moments of either side,
whenever the hand-over arrives.

Moments are deduplicated per (rule, group) within the rule's cooldown, and their ids hash the
rule and the first evidence event, so a replay yields the same ids (landing replaces them).
Positive signals: an order or purchase, NPS ≥ 9, CSAT ≥ 4, a contact that ended resolved (a
call, a chat, service's email reply, a service-desk visit).
A count rule with `extend` (repeat_contact) adds a further event of a group whose moment is still
open to that moment's evidence and republishes it (same id) as changed, so a third contact is
evidence of the one repeat-contact moment rather than the start of another. A `contact` group
counts an event under its order and its topic; the cooldown holds across both.

Rule state is made of small frozen records, one kind per thing remembered (`CountHit` for count
rules, `StepHit` for sequences, `Pending` and `Expected` for absences, `Signal` for recovery,
`OpenMoment` for moments awaiting it); rules are dispatched by kind through `DETECTORS`.
`Detector.to_json` writes them with named fields (a column per field) and a `version`
(`STATE_VERSION`); `Detector.from_json` also reads the state written before that (positional
lists under one-letter keys, no version), so a worker restored from an older changelog carries
on where it stopped, and refuses a newer version with `StateVersionError` instead of guessing.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Callable, Iterable

from .events import CONTACT_ENDS
from .rules import Rule
from .sessions import Touch

SIGNAL_MEMORY_MS = 14 * 86_400_000


def is_positive(t: Touch) -> bool:
    if t.event_type in ("order_placed", "purchase"):
        return True
    if t.event_type == "survey_response":
        return (t.attrs.get("nps") or 0) >= 9 or (t.attrs.get("csat") or 0) >= 4
    return t.event_type in CONTACT_ENDS and bool(t.attrs.get("resolved"))


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


def _groups(rule: Rule, t: Touch) -> list[str]:
    """The groups an event counts in: one, or for `contact` its order and its topic (either)."""
    if rule.group_by != "contact":
        g = _group(rule, t)
        return [] if g is None else [g]
    order, topic = t.attrs.get("_order_id"), t.attrs.get("topic")
    # the order's key is the order id alone, as group_by = "order_id" keyed it: counts restored
    # from state written before contacts had topics carry on
    return ([order] if order else []) + ([f"topic:{topic}"] if topic else [])



STATE_VERSION = 2


class StateVersionError(ValueError):
    """Rule state written by a newer worker than this one (its format is unknown here)."""


@dataclass(frozen=True, slots=True)
class CountHit:
    """A count rule's matching event, remembered per rule and group until the window passes."""
    at: int
    event_id: str
    channel: str = ""  # state written before the channel was kept has none


@dataclass(frozen=True, slots=True)
class StepHit:
    """An event that matched step `step` of a sequence rule."""
    at: int
    event_id: str
    step: int


@dataclass(frozen=True, slots=True)
class Pending:
    """An absence rule's trigger waiting until `deadline` for its expected event."""
    rule: str
    event_id: str
    at: int
    deadline: int
    correlate: Any  # the trigger's value of the rule's `correlate` attribute, "*" without one
    channel: str
    store_id: str | None


@dataclass(frozen=True, slots=True)
class Expected:
    """An absence rule's expected event, seen (possibly before its trigger)."""
    at: int
    correlate: Any


@dataclass(frozen=True, slots=True)
class Signal:
    """A positive signal (`is_positive`) that may recover a moment."""
    at: int
    event_id: str


@dataclass(frozen=True, slots=True)
class OpenMoment:
    """A moment still open for recovery until `deadline`."""
    moment_id: str
    rule: str
    customer_id: str
    channel: str
    store_id: str | None
    at: int
    evidence: tuple[str, ...]
    deadline: int

    @classmethod
    def of(cls, m: Moment) -> "OpenMoment":
        return cls(m.moment_id, m.rule, m.customer_id, m.channel, m.store_id, m.at, tuple(m.evidence),
                   m.recovery_deadline)

    def moment(self, status: str, recovered_by: str | None = None) -> Moment:
        return Moment(self.moment_id, self.rule, self.customer_id, self.channel, self.store_id, self.at,
                      list(self.evidence), self.deadline, status, recovered_by)


# event-time order, ties by event id (what sorting the positional lists did)
_COUNT_ORDER = attrgetter("at", "event_id", "channel")
_STEP_ORDER = attrgetter("at", "event_id", "step")
_SIGNAL_ORDER = attrgetter("at", "event_id")


@dataclass
class Detector:
    """One customer's rule state (mutable container of frozen records)."""
    counts: dict[str, list[CountHit]] = field(default_factory=dict)    # "rule|group" -> hits
    seqs: dict[str, list[StepHit]] = field(default_factory=dict)       # rule -> step hits
    pending: list[Pending] = field(default_factory=list)
    expected: dict[str, list[Expected]] = field(default_factory=dict)  # rule -> expected events seen
    fired: dict[str, int] = field(default_factory=dict)                # "rule|group" -> event time fired
    open: list[OpenMoment] = field(default_factory=list)               # moments awaiting recovery
    signals: list[Signal] = field(default_factory=list)

    # -- arrival ----------------------------------------------------------------------------------
    def on_touch(self, rules: Iterable[Rule], customer: str, t: Touch, received_at: int | None = None
                 ) -> tuple[list[Moment], list[Moment]]:
        """Returns (new moments, moments whose recovery status changed)."""
        new: list[Moment] = []
        extended: list[Moment] = []
        for rule in rules:
            if rule.extend and rule.kind == "count":
                grown = self._extend(rule, t)
                if grown is not None:
                    extended.append(grown)
                    continue
            m = DETECTORS[rule.kind](self, rule, customer, t)
            if m is not None:
                m.trigger_received_at = received_at
                new.append(m)
        changed: list[Moment] = extended
        if is_positive(t):
            self.signals.append(Signal(t.at, t.event_id))
            still = []
            for o in self.open:
                if o.at < t.at <= o.deadline:
                    changed.append(o.moment("recovered", t.event_id))
                else:
                    still.append(o)
            self.open = still
        for m in new:  # a positive signal may have arrived before the moment (out of order)
            self._settle(m)
        return new, changed

    def _recovering(self, at: int, deadline: int) -> Signal | None:
        """The earliest remembered positive signal inside the recovery window (at, deadline]."""
        return next((s for s in sorted(self.signals, key=_SIGNAL_ORDER) if at < s.at <= deadline), None)

    def _settle(self, m: Moment) -> None:
        """A new moment: recovered by a remembered signal, else open until its deadline."""
        sig = self._recovering(m.at, m.recovery_deadline)
        if sig is not None:
            m.status, m.recovered_by = "recovered", sig.event_id
        else:
            self.open.append(OpenMoment.of(m))

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
        groups = _groups(rule, t)
        found: tuple[str, list[CountHit]] | None = None
        for group in groups:
            key = f"{rule.name}|{group}"
            seen = self.counts.setdefault(key, [])
            if any(e.event_id == t.event_id for e in seen):
                continue
            seen.append(CountHit(t.at, t.event_id, t.channel))
            seen.sort(key=_COUNT_ORDER)  # pruned by the watermark only: an event may arrive up to the lateness late
            for i in range(len(seen) if found is None else 0):  # a window of `threshold` events with the new one
                j = i + rule.threshold - 1
                if j < len(seen) and seen[j].at - seen[i].at <= rule.window_ms and \
                        any(e.event_id == t.event_id for e in seen[i:j + 1]):
                    found = group, seen[i:j + 1]
                    break
        if found is None:
            return None
        # one moment per event however many of its groups fill a window; the cooldown holds
        # across its groups (the same contacts seen by order and by topic)
        group, window = found
        at = window[-1].at
        keys = [f"{rule.name}|{g}" for g in groups]
        if any(k in self.fired and abs(at - self.fired[k]) < rule.cooldown_ms for k in keys):
            return None
        m = self._fire(rule, customer, t, group, at, [e.event_id for e in window])
        if m is not None:
            for k in keys:
                self.fired[k] = at
        return m

    def _extend(self, rule: Rule, t: Touch) -> Moment | None:
        """`extend` rules: the event joins a still-open moment of the rule when it shares a group
        with the moment's evidence and lies within the rule's window of it; the moment (same
        id, evidence in event-time order) is returned to be republished."""
        if not (rule.match and rule.match(t.event_type, t.channel, t.attrs)):
            return None
        keys = [f"{rule.name}|{g}" for g in _groups(rule, t)]
        related = {e.event_id for k in keys for e in self.counts.get(k, [])}
        for n, o in enumerate(self.open):
            if o.rule != rule.name or not related.intersection(o.evidence):
                continue
            if t.event_id in o.evidence or abs(t.at - o.at) > rule.window_ms:
                return None
            times = {e.event_id: e.at for k in self.counts if k.startswith(rule.name + "|") for e in self.counts[k]}
            for k in keys:
                seen = self.counts.setdefault(k, [])
                if all(e.event_id != t.event_id for e in seen):
                    seen.append(CountHit(t.at, t.event_id, t.channel))
                    seen.sort(key=_COUNT_ORDER)
            times[t.event_id] = t.at
            grown = replace(o, evidence=tuple(sorted([*o.evidence, t.event_id], key=lambda e: (times.get(e, 0), e))))
            self.open[n] = grown
            return grown.moment("open")
        return None

    def _sequence(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        steps = [i for i, s in enumerate(rule.steps) if s(t.event_type, t.channel, t.attrs)]
        if not steps:
            return None
        seen = self.seqs.setdefault(rule.name, [])
        for i in steps:
            seen.append(StepHit(t.at, t.event_id, i))
        return self._sequence_chain(rule, customer, t)

    def _sequence_chain(self, rule: Rule, customer: str, t: Touch | None) -> Moment | None:
        """The earliest complete chain step0 ≤ step1 ≤ … within the rule's span, in event time;
        fired when it contains `t` (or, with t None after a merge, any chain the cooldown allows)."""
        seen = self.seqs.get(rule.name) or []
        seen.sort(key=_STEP_ORDER)  # pruned by the watermark only
        chain: list[StepHit] = []
        for e in seen:
            if e.step == len(chain) and (not chain or (e.at >= chain[-1].at and e.at - chain[0].at <= rule.within_ms)):
                chain.append(e)
                if len(chain) == len(rule.steps):
                    if t is None or any(c.event_id == t.event_id for c in chain):
                        last = t or Touch(chain[-1].at, chain[-1].event_id, "", rule.steps[-1].channel or "", "*")
                        m = self._fire(rule, customer, last, "*", chain[-1].at, [c.event_id for c in chain])
                        if m is not None or t is not None:
                            return m
                    chain = []
            elif e.step == 0:
                chain = [e]
        return None

    def _absence(self, rule: Rule, customer: str, t: Touch) -> Moment | None:
        corr = t.attrs.get(rule.correlate) if rule.correlate else "*"
        if rule.expected and rule.expected(t.event_type, t.channel, t.attrs):
            self.expected.setdefault(rule.name, []).append(Expected(t.at, corr))
            self.pending = [p for p in self.pending if not (p.rule == rule.name and p.correlate == corr
                                                           and p.at <= t.at <= p.deadline)]
        if rule.trigger and rule.trigger(t.event_type, t.channel, t.attrs):
            deadline = t.at + rule.within_ms
            early = any(e.correlate == corr and t.at <= e.at <= deadline for e in self.expected.get(rule.name, []))
            if not early and not any(p.event_id == t.event_id for p in self.pending):
                self.pending.append(Pending(rule.name, t.event_id, t.at, deadline, corr, t.channel, t.store_id))
        return None

    # -- identity merge ---------------------------------------------------------------------------
    def absorb(self, theirs: "Detector") -> None:
        """Take over the rule state of a customer merged into this one (then `recheck`)."""
        for k, v in theirs.counts.items():
            self.counts.setdefault(k, []).extend(e for e in v if e not in self.counts.get(k, []))
        for k, w in theirs.seqs.items():
            self.seqs.setdefault(k, []).extend(e for e in w if e not in self.seqs.get(k, []))
        self.pending += [p for p in theirs.pending if p not in self.pending]
        for k, x in theirs.expected.items():
            self.expected.setdefault(k, []).extend(x)
        self.open += [m for m in theirs.open if m.moment_id not in {o.moment_id for o in self.open}]
        self.signals += [s for s in theirs.signals if s not in self.signals]
        for k, at in theirs.fired.items():
            self.fired[k] = max(at, self.fired.get(k, at))

    def recheck(self, rules: Iterable[Rule], customer: str) -> tuple[list[Moment], list[Moment]]:
        """After a merge joined two customers' state (`absorb`): fire the windows that only the
        union fills (the same ids a single customer would have produced), drop absence timers
        whose expected event the other side had already seen, and recover each open moment with
        a positive signal the other side remembers inside its window. Returns (new moments,
        moments now recovered), like `on_touch`.

        The hand-over reaches the winner after the event that linked the two profiles, and
        maybe after more of the winner's events: a signal the winner saw before it met the
        loser's open moment then still recovers it (else the moment's status would depend on
        how fast the hand-over travelled), and a moment only the union fires meets the signals
        of both sides as any moment arriving after its signal does."""
        self.pending = [p for p in self.pending
                        if not any(e.correlate == p.correlate and p.at <= e.at <= p.deadline
                                   for e in self.expected.get(p.rule, []))]
        changed: list[Moment] = []
        still = []
        for o in self.open:
            sig = self._recovering(o.at, o.deadline)
            if sig is not None:
                changed.append(o.moment("recovered", sig.event_id))
            else:
                still.append(o)
        self.open = still
        new: list[Moment] = []
        for rule in rules:
            if rule.kind == "sequence":  # a chain whose steps were split between the two profiles
                m = self._sequence_chain(rule, customer, None)
                if m is not None:
                    self._settle(m)
                    new.append(m)
                continue
            if rule.kind != "count":
                continue
            for key, seen in list(self.counts.items()):
                if not key.startswith(rule.name + "|"):
                    continue
                group = key.split("|", 1)[1]
                seen.sort(key=_COUNT_ORDER)
                for i in range(len(seen) - rule.threshold + 1):
                    window = seen[i:i + rule.threshold]
                    if window[-1].at - window[0].at <= rule.window_ms:
                        last = window[-1]
                        t = Touch(last.at, last.event_id, "", last.channel, group)
                        m = self._fire(rule, customer, t, group, last.at, [e.event_id for e in window])
                        if m is not None:
                            self._settle(m)
                            new.append(m)
                        break
        return new, changed

    # -- event time passes ------------------------------------------------------------------------
    def on_watermark(self, rules_by_name: dict[str, Rule], customer: str, wm: int) -> tuple[list[Moment], list[Moment]]:
        if not (self.pending or self.open or self.signals or self.expected or self.fired or self.counts or self.seqs):
            return [], []
        new: list[Moment] = []
        keep = []
        for p in self.pending:
            if p.deadline <= wm and p.rule in rules_by_name:
                rule = rules_by_name[p.rule]
                t = Touch(p.at, p.event_id, "", p.channel, p.correlate, p.store_id)
                m = self._fire(rule, customer, t, f"{p.correlate}|{p.event_id}", p.deadline, [p.event_id])
                if m is not None:
                    self._settle(m)
                    new.append(m)
            else:
                keep.append(p)
        self.pending = keep
        changed = [o.moment("unrecovered") for o in self.open if o.deadline <= wm]
        if changed:
            self.open = [o for o in self.open if o.deadline > wm]
        horizon = wm - SIGNAL_MEMORY_MS
        self.signals = [s for s in self.signals if s.at >= horizon]
        for name in list(self.expected):
            absence = rules_by_name.get(name)
            keep_for = absence.within_ms if absence else 0
            self.expected[name] = [e for e in self.expected[name] if e.at >= wm - keep_for]
        self.fired = {k: v for k, v in self.fired.items() if v >= wm - 7 * 86_400_000}
        for key in list(self.counts):
            known = rules_by_name.get(key.split("|", 1)[0])
            horizon = wm - (2 * max(known.window_ms, known.within_ms) if known else 0)  # twice the window
            hits = [e for e in self.counts[key] if e.at >= horizon]
            if hits:
                self.counts[key] = hits
            else:
                del self.counts[key]
        for key in list(self.seqs):
            known = rules_by_name.get(key.split("|", 1)[0])
            horizon = wm - (2 * max(known.window_ms, known.within_ms) if known else 0)
            steps = [e for e in self.seqs[key] if e.at >= horizon]
            if steps:
                self.seqs[key] = steps
            else:
                del self.seqs[key]
        for name in [n for n, v in self.expected.items() if not v]:
            del self.expected[name]
        return new, changed

    def next_deadline(self) -> int | None:
        ds = [p.deadline for p in self.pending] + [o.deadline for o in self.open]
        return min(ds) if ds else None

    def empty(self) -> bool:
        return not (self.counts or self.seqs or self.pending or self.open or self.signals or self.expected)

    # -- (de)serialization ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Named fields and the format's version; a kind of state the customer holds none of is
        left out. Records of one kind are written as columns (one list per field, in step), about
        as compact as the positional lists were; open moments, few and with their evidence, as
        objects."""
        d: dict[str, Any] = {"version": STATE_VERSION}
        if self.counts:
            d["counts"] = {k: _columns(v, CountHit) for k, v in self.counts.items()}
        if self.seqs:
            d["sequences"] = {k: _columns(v, StepHit) for k, v in self.seqs.items()}
        if self.pending:
            d["pending"] = _columns(self.pending, Pending)
        if self.expected:
            d["expected"] = {k: _columns(v, Expected) for k, v in self.expected.items()}
        if self.fired:
            d["fired"] = self.fired
        if self.open:
            d["open"] = [{"moment_id": o.moment_id, "rule": o.rule, "customer_id": o.customer_id,
                          "channel": o.channel, "store_id": o.store_id, "at": o.at, "evidence": list(o.evidence),
                          "deadline": o.deadline} for o in self.open]
        if self.signals:
            d["signals"] = _columns(self.signals, Signal)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "Detector":
        if not d:
            return cls()
        version = d.get("version")
        if version is None:
            return cls._from_v1(d)
        if version != STATE_VERSION:
            raise StateVersionError(f"rule state version {version!r} is not one this worker reads "
                                    f"(it reads {STATE_VERSION} and the unversioned format before it); "
                                    "run a worker at least as new as the one that wrote this state")
        return cls({k: _records(v, CountHit) for k, v in d.get("counts", {}).items()},
                   {k: _records(v, StepHit) for k, v in d.get("sequences", {}).items()},
                   _records(d.get("pending", {}), Pending),
                   {k: _records(v, Expected) for k, v in d.get("expected", {}).items()},
                   dict(d.get("fired", {})),
                   [OpenMoment(**dict(o, evidence=tuple(o["evidence"]))) for o in d.get("open", [])],
                   _records(d.get("signals", {}), Signal))

    @classmethod
    def _from_v1(cls, d: dict[str, Any]) -> "Detector":
        """The format before versions: positional lists under one-letter keys (c counts [at, event,
        channel?], q sequences [at, event, step], p pending [rule, event, at, deadline, correlate,
        channel, store], e expected [at, correlate], f fired, o open moments as dicts, s signals
        [at, event])."""
        return cls({k: [CountHit(*e[:3]) for e in v] for k, v in d["c"].items()},
                   {k: [StepHit(*e) for e in v] for k, v in d["q"].items()},
                   [Pending(*p) for p in d["p"]],
                   {k: [Expected(*e) for e in v] for k, v in d["e"].items()},
                   dict(d["f"]),
                   [OpenMoment(o["id"], o["rule"], o["c"], o["ch"], o["st"], o["at"], tuple(o["ev"]), o["deadline"])
                    for o in d["o"] if o.get("status", "open") == "open"],
                   [Signal(*s) for s in d["s"]])


_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls))
                                        for cls in (CountHit, StepHit, Pending, Expected, Signal)}
_GETTERS = {name: attrgetter(name) for names in _FIELDS.values() for name in names}


def _columns(records: list[Any], cls: type) -> dict[str, list[Any]]:
    """One list per field; no records, no columns (most customers hold few kinds of state)."""
    if not records:
        return {}
    return {name: list(map(_GETTERS[name], records)) for name in _FIELDS[cls]}


def _records(columns: dict[str, list[Any]], cls: type) -> list[Any]:
    if not columns:
        return []
    names = _FIELDS[cls]
    if len({len(columns[n]) for n in names}) > 1:
        raise ValueError(f"{cls.__name__} columns of unequal length in rule state")
    return [cls(*row) for row in zip(*(columns[n] for n in names), strict=True)]


#: rule kind -> its detector (cem.rules.KINDS); each returns the moment the touch fires, if any
DETECTORS: dict[str, Callable[[Detector, Rule, str, Touch], Moment | None]] = {
    "single": Detector._single, "count": Detector._count, "sequence": Detector._sequence,
    "absence": Detector._absence}
