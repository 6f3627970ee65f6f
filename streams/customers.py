"""The customer stage (free of Faust): its input topic — cem.stage, the internal rows of
`cem.schemas.stage`, or cem.touchpoints (Avro) with CEM_STAGE_HOP=avro; keyed by canonical
customer either way, and a record of either shape is read on either topic → sessions,
journeys, negative moments, alerts and lifecycle per customer on event time → cem.sessions,
cem.journeys, cem.moments, cem.alerts, cem.customers.

State is one `Timeline` per customer in a `KeyedState` (live objects in memory; the worker
makes it durable through its own changelog topic): a Timeline is decoded only when its partition
is restored and encoded once per changed customer per flush. Event time comes from
`watermark` control records: the coordinator combines the raw partitions' watermarks (min over
the non-idle ones, the wall clock when all are idle) and appends them behind the events they
cover, so a watermark never overtakes an event still in flight, however fast a replay runs.
Each partition's watermark lives in memory (a restart replays input from committed offsets and
waits for fresh watermarks; finalized events are remembered per customer so a replay does not
duplicate their sessions); event-time timers (`streams/timers.py`: in memory, or in the
scratch file when state is bounded) fire session and journey closes as it passes them. Control
records (`streams/control.py`, typed and dispatched by type) `merge` hand a loser's timeline to
the winner's partition (`transfer`), where it is absorbed; a control record that does not decode
is dead-lettered (`dead`) and counted, never fatal. Merge bookkeeping (who merged
into whom, which hand-overs a winner awaits) lives in its own `KeyedState` and changelog
(`streams/merge_book.py`), apart from the timelines. A control record `erase` (a customer's
erasure, decided by the coordinator) drops the customer's timeline — open sessions, journey, rule
and alert state, lifecycle — and its merge book, with tombstones in both changelogs; its deadlines
find nothing when they fire. When it carries the `Erasure`, that is sent on to
cem.privacy.erasures after this group's rows and state are acknowledged, so landing deletes rows
that are already on their way, not before them. An event record
that does not decode is skipped: on cem.touchpoints landing dead-letters it, on the internal topic
(which nothing lands) the stage does.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Callable, Iterable

from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import DecodeError, decode_record
from cem.schemas.stage import decode_rows, is_stage_record
from cem.sessions import Session, Touch, touch_of
from cem.timeline import Changes, Timeline
from cem.alerts import Alert
from cem.detect import Moment, is_positive
from cem.lifecycle import Change
from cem.privacy import NO_CONSENT
from cem.playbooks import Playbooks, load_playbooks
from cem.rules import Route, Rule, by_event_type, route
from cem.settings import (ALERTS_TOPIC, CUSTOMERS_TOPIC, ERASURES_TOPIC, JOURNEYS_TOPIC, MOMENTS_TOPIC,
                          SESSIONS_TOPIC, TOUCHPOINTS_TOPIC)
from .control import (CONTROL_HEADER, AlertAction, AwaitHandover, ControlError, ControlMessage, Erase, Forward,
                      Handover, MergeAway, Watermark, decode as decode_control)
from .merge_book import MergeBook, decode_book, encode_book, legacy_key, migrate
from .state import KeyedState
from .timers import HeapTimers, Timers

CONTROL = CONTROL_HEADER
#: How long a worker ignores events resolved to an erased id (a replica's lag is far shorter).
ERASED_HOLD_S = 600.0


class CustomerStage:
    def __init__(self, table: KeyedState, registry: SchemaRegistry, rows: Any,
                 send_control: Callable[[str, ControlMessage], None],
                 clock: Callable[[], float] = time.time, on_late: Callable[[], None] | None = None,
                 rules: tuple[Rule, ...] = (), routes: tuple[Route, ...] = (),
                 on_moment: Callable[[str, float], None] | None = None,
                 on_recovery: Callable[[str, str], None] | None = None,
                 on_alert: Callable[[str, str], None] | None = None,
                 timers: Timers | None = None, merges: KeyedState | None = None, dead: Any = None,
                 playbooks: Playbooks | None = None):
        self.table = table
        # merge bookkeeping per customer; without a table of its own (tests) it is kept in memory only
        self.merges = merges if merges is not None else KeyedState(encode_book, decode_book)
        self._dead = dead  # DeadLetters (cem.kafka.dlq) for records the stage cannot use
        self.bad_controls = 0
        self._handlers: dict[type, Callable[[Any, int], None]] = {
            Watermark: self._on_watermark, MergeAway: self._on_merge, AwaitHandover: self._on_await,
            Handover: self._on_handover, Forward: self._on_forward, AlertAction: self._alert_action,
            Erase: self._on_erase}
        self._registry = registry
        self._reader = registry.latest("touchpoint").parsed
        self._rows = rows
        self._send_control = send_control
        self._clock = clock
        self._on_late = on_late
        self._wm: dict[int, dict[str, int]] = {}
        # each customer's earliest deadline (streams/timers.py): re-armed only for an earlier
        # one, so ~one entry per customer with a timer instead of one per change
        self._timers: Timers = timers if timers is not None else HeapTimers()
        self._seq = 0
        self._last_version = 0
        self._revoked: set[int] = set()
        self.late = 0
        self._rules = rules
        self._rules_by_name = {r.name: r for r in rules}
        self._rules_by_type = by_event_type(rules)
        self._routes = routes
        self._playbooks = playbooks if playbooks is not None else load_playbooks()
        self._on_moment = on_moment
        self._on_recovery = on_recovery
        self._on_alert = on_alert
        self._moments: list[tuple[Moment, bool, Timeline]] = []  # (moment, is new, its timeline) to publish
        self._life: list[tuple[Timeline, Change]] = []  # lifecycle changes to publish
        self._erasures: list[dict] = []  # erasures to pass on to landing after the next flush
        self.erased = 0
        # ids erased in the last ERASED_HOLD_S, in memory only (no state keeps an erased id): an
        # event a replica resolved just before it saw the erasure builds no timeline for them
        self._recently_erased: dict[str, float] = {}

    # -- partition watermark ---------------------------------------------------------------
    def gauges(self) -> dict[int, tuple[int | None, int]]:
        """partition -> (event-time watermark or None, customers held), for metrics; read from
        another thread, so it copies and may be a moment old."""
        held = self.table.counts()
        marks = {p: w["wm"] for p, w in list(self._wm.items())}
        return {p: (marks.get(p) if marks.get(p, -(1 << 62)) > 0 else None, held.get(p, 0))
                for p in set(held) | set(marks)}

    def _part(self, p: int) -> dict[str, int]:
        w = self._wm.get(p)
        if w is None:
            # not restored after a restart: the input replays from committed offsets, which may
            # lie behind the last watermark; the coordinator's fresh watermarks take over
            w = self._wm[p] = {"wm": -(1 << 62)}
        return w

    def _open(self, partition: int) -> None:
        # first record of a partition since it was assigned: restore its state from the
        # changelog and re-arm every deadline of it (bookkeeping an older worker wrote among the
        # timelines moves to its own table first)
        restored = self.table.open(partition)
        books = set(self.merges.open(partition))
        if any(legacy_key(k) for k in restored):
            restored = migrate(self.table, self.merges, restored, books, partition)
        for i, key in enumerate(restored):
            tl = self.table.get(key)
            if isinstance(tl, Timeline):
                self._arm(partition, key, tl.next_deadline())
            if i % 1000 == 999:
                self.table.trim()  # a restore bigger than the live bound is decoded in passes
        self.table.trim()
        self.merges.trim()

    def revoke(self, partitions: set[int]) -> None:
        """These partitions went to another worker: forget their state, deadlines and watermarks
        before the next record (called from a rebalance callback, possibly while a flush runs in a
        thread, so it only takes note; `process` applies it)."""
        self._revoked |= partitions

    def _apply_revokes(self) -> None:
        revoked, self._revoked = self._revoked, set()
        for p in revoked:
            self.table.close(p)
            self.merges.close(p)
            self._timers.drop(p)
            self._wm.pop(p, None)

    # -- records ----------------------------------------------------------------------------------
    def process(self, value: bytes | None, topic: str, partition: int, offset: int,
                headers: list | None = None, key: bytes | None = None) -> None:
        if self._revoked:
            self._apply_revokes()
        if not self.table.is_open(partition):
            self._open(partition)
        control = next((v.decode() for k, v in (headers or []) if k == CONTROL), None)
        if control is not None:
            try:
                msg = decode_control(control, value)
            except ControlError as err:
                self.bad_controls += 1
                if self._dead is not None:
                    self._dead.send(value, err.reason, err.detail, topic=topic, partition=partition, offset=offset,
                                    key=key, source_headers=headers)
                return
            self._handlers[type(msg)](msg, partition)
            return
        try:
            rows = self._rows_of(value)
        except DecodeError as err:
            if topic != TOUCHPOINTS_TOPIC and self._dead is not None:
                self._dead.send(value, err.reason, err.detail, topic=topic, partition=partition, offset=offset,
                                key=key, source_headers=headers)
            return  # on cem.touchpoints landing dead-letters it; the stage has nothing to learn from it
        part = self._part(partition)
        dirty: dict[str, Timeline] = {}
        forwarded: dict[str, Timeline] = {}
        changes = Changes()
        for customer, touch, received_at in rows:
            if customer == NO_CONSENT:
                continue  # nobody's: it counts in the rollups, but builds no customer's timeline
            if self._recently_erased and customer in self._recently_erased:
                continue  # erased a moment ago (landing deletes its row again a little later)
            book: MergeBook | None = self.merges.get(customer)
            winner = book.merged_into if book is not None else None
            if winner:
                # resolved by a replica that had not seen the merge yet: its timeline lives
                # with the winner now, so the touch follows it there
                fwd = forwarded.setdefault(winner, Timeline(winner))
                fwd.add(touch, -(1 << 62))
                continue
            tl = dirty.get(customer) or self._load(customer)
            dirty[customer] = tl
            # while a merge hands state to this customer nothing of it is final, so an event
            # behind the watermark (a replay resolved straight to the winner) is not late
            wm = -(1 << 62) if book is not None and book.awaiting else part["wm"]
            if touch.at < wm:
                self.late += 1
                if self._on_late:
                    self._on_late()
            added = tl.add(touch, wm)
            changes.extend(added)
            if not added.accepted:
                continue  # replayed: already counted
            opened = any(st == "open" and len(s.touches) == 1 and s.touches[0].event_id == touch.event_id
                         for s, st, _ in added.sessions)
            self._observe(tl, customer, touch, opened, received_at)
        for winner, tl in forwarded.items():
            self._send_control(winner, Forward(winner, tl))
        self._finish(partition, dirty, changes)

    def _rows_of(self, value: bytes | None) -> list[tuple[str, Touch, int | None]]:
        """(customer, touch, received_at) per event of a record: an internal stage record
        (`cem.schemas.stage`, no Avro) or an Avro record of cem.touchpoints."""
        if is_stage_record(value):
            return decode_rows(value)
        events = decode_record(value, self._registry, self._reader).events
        return [((ev.get("cem") or {}).get("customer_id") or "unidentified", touch_of(ev), ev.get("received_at"))
                for ev in events]

    def _observe(self, tl: Timeline, customer: str, touch: Touch, opened: bool, received_at: int | None) -> None:
        """A touch new to this customer meets the lifecycle and the rules."""
        nps = touch.attrs.get("nps") if touch.event_type == "survey_response" else None
        tl.life.on_spend(touch.event_type, touch.attrs.get("amount_cents"))
        self._life += [(tl, c) for c in tl.life.on_touch(touch.event_type, touch.at, is_positive(touch), nps, opened)]
        if self._rules:
            new, changed = tl.detector.on_touch(self._rules_by_type.get(touch.event_type, ()), customer, touch,
                                                received_at)
            self._moments += [(m, True, tl) for m in new] + [(m, False, tl) for m in changed]
            if new and tl.journey is not None:
                tl.journey.moments += [m.rule for m in new]

    # -- control records (streams/control.py), one handler per type ---------------------------------
    def _on_watermark(self, msg: Watermark, partition: int) -> None:
        part = self._part(partition)
        part["wm"] = max(part["wm"], msg.wm)
        self._finish(partition, {}, Changes())

    def _on_erase(self, msg: Erase, partition: int) -> None:
        """A customer's erasure: its timeline and merge book go, with tombstones in both changelogs;
        the erasure itself is passed on to landing after the next flush."""
        if self.table.get(msg.customer) is not None:
            self._drop(msg.customer, partition)
        if self.merges.get(msg.customer) is not None:
            self.merges.delete(msg.customer, partition)
        self.erased += 1
        now = self._clock()
        self._recently_erased = {c: t for c, t in self._recently_erased.items() if now - t < ERASED_HOLD_S}
        self._recently_erased[msg.customer] = now
        if msg.erasure:
            self._erasures.append(msg.erasure)

    def _on_merge(self, msg: MergeAway, partition: int) -> None:
        loser, winner = msg.loser, msg.winner
        book = self.merges.get(loser) or MergeBook()
        self.merges.put(loser, MergeBook(winner, book.awaiting), partition)
        tl = self.table.get(loser)
        if tl is not None:
            self._drop(loser, partition)
            if tl.life.stage is not None:
                c = Change("merged", tl.life.stage, f"merged into {winner}", tl.life.last_touch)
                self._rows.publish(CUSTOMERS_TOPIC, loser, lifecycle_row(loser, c, tl.life, self._version()))
        # always answer, even with nothing: the winner waits for this
        self._send_control(winner, Handover(winner, loser, tl))

    def _on_await(self, msg: AwaitHandover, partition: int) -> None:
        book = self.merges.get(msg.winner) or MergeBook()
        if msg.loser not in book.awaiting:
            self.merges.put(msg.winner, MergeBook(book.merged_into, book.awaiting + (msg.loser,)), partition)

    def _on_handover(self, msg: Handover, partition: int) -> None:
        winner = msg.winner
        book = self.merges.get(winner)
        if book is not None:
            rest = MergeBook(book.merged_into, tuple(x for x in book.awaiting if x != msg.loser))
            if rest.holds():
                if rest != book:
                    self.merges.put(winner, rest, partition)
            else:
                self.merges.delete(winner, partition)
        self._absorb(winner, self._load(winner), msg.timeline, (), partition)

    def _on_forward(self, msg: Forward, partition: int) -> None:
        tl = self._load(msg.winner)
        # touches a stale replica resolved to a merged-away profile, forwarded here: new to this
        # customer, so they meet its rules and lifecycle like any touch (a return_received
        # arriving this way must still arm no_refund)
        known = set(tl.recent) | {t.event_id for st in tl.subjects.values() for t in st.touches}
        fresh = sorted((t for st in msg.timeline.subjects.values() for t in st.touches if t.event_id not in known),
                       key=lambda t: (t.at, t.event_id))
        self._absorb(msg.winner, tl, msg.timeline, fresh, partition)

    def _absorb(self, winner: str, tl: Timeline, incoming: Timeline | None, fresh: Iterable[Touch],
                partition: int) -> None:
        changes = tl.absorb(incoming) if incoming is not None else Changes()
        for touch in fresh:
            self._observe(tl, winner, touch, False, None)
        if incoming is not None and self._rules:
            new, changed = tl.detector.recheck(self._rules, winner)
            self._moments += [(m, True, tl) for m in new] + [(m, False, tl) for m in changed]
        self._finish(partition, {winner: tl}, changes)

    def _alert_action(self, msg: AlertAction, partition: int) -> None:
        """A person acknowledged or resolved an alert (`cem alerts ack|resolve`)."""
        customer = msg.customer
        book = self.merges.get(customer)
        if book is not None and book.merged_into:  # the customer merged away: the alert lives with the winner now
            self._send_control(book.merged_into, replace(msg, customer=book.merged_into))
            return
        tl = self.table.get(customer)
        if tl is None:
            return
        a = tl.alerts.act(msg.alert_id, msg.action, msg.by, msg.note, msg.at)
        if a is not None:
            self._publish_alert(a, tl.customer_id, self._clock())
        self._finish(partition, {customer: tl}, Changes())

    def _load(self, customer: str) -> Timeline:
        return self.table.get(customer) or Timeline(customer)

    def _drop(self, key: str, partition: int) -> None:
        self.table.delete(key, partition)

    def _finish(self, partition: int, dirty: dict[str, Timeline], changes: Changes) -> None:
        part = self._part(partition)
        wm = part["wm"]
        for customer, tl in dirty.items():  # fire what this record itself made final
            if not self._awaiting(customer):
                changes.extend(tl.advance(wm))
                self._detect_time(customer, tl, wm)
        held: list[tuple[int, str]] = []
        for deadline, customer in self._timers.due(partition, wm):
            if self._awaiting(customer):
                held.append((deadline, customer))  # a merge is handing state over: not yet
                continue
            tl = dirty.get(customer) or self.table.get(customer)
            if tl is None:
                continue
            changes.extend(tl.advance(wm))
            self._detect_time(customer, tl, wm)
            dirty[customer] = tl
        self._timers.hold(partition, held)
        self._emit_moments()  # alert state changes with them, before the timelines are written
        for customer, tl in dirty.items():  # one table write per changed customer
            if tl.holds_state():
                self.table.put(customer, tl, partition)
                self._arm(partition, customer, tl.next_deadline())
            else:
                self._drop(customer, partition)
        self._emit(changes, dirty)

    def _awaiting(self, customer: str) -> bool:
        """A merge is handing state over to this customer: nothing of it is final yet."""
        book = self.merges.get(customer)
        return book is not None and bool(book.awaiting)

    def _arm(self, partition: int, customer: str, deadline: int | None) -> None:
        """Make sure the customer wakes up by `deadline` (a deadline that moved later is found
        when the earlier one fires: the timeline advances, finds nothing due, and is armed again
        at its real next deadline)."""
        if deadline is not None:
            self._timers.arm(partition, customer, deadline)

    def _detect_time(self, customer: str, tl: Timeline, wm: int) -> None:
        if self._rules:
            new, changed = tl.detector.on_watermark(self._rules_by_name, customer, wm)
            self._moments += [(m, True, tl) for m in new] + [(m, False, tl) for m in changed]
        tl.alerts.prune(wm)
        self._life += [(tl, c) for c in tl.life.on_watermark(wm)]

    def _emit_moments(self) -> None:
        now = self._clock()
        for m, is_new, tl in self._moments:
            rule = self._rules_by_name.get(m.rule)
            if rule is None:
                continue
            team, severity, delivery = route(rule, m.channel, m.store_id, self._routes)
            version = self._version()
            latency = (now * 1000 - m.trigger_received_at) if (is_new and m.trigger_received_at) else None
            self._rows.publish(MOMENTS_TOPIC, m.customer_id, {
                "moment_id": m.moment_id, "rule": m.rule, "kind": rule.kind, "severity": severity, "team": team,
                "customer_id": m.customer_id, "channel": m.channel, "store_id": m.store_id,
                "evidence": m.evidence, "occurred_at": m.at / 1000, "detected_at": now,
                "recovery_status": m.status, "recovered_by": m.recovered_by,
                "recovery_deadline": m.recovery_deadline / 1000, "latency_ms": latency, "version": version})
            at = m.recovery_deadline if m.status == "unrecovered" else m.at
            self._life += [(tl, c) for c in tl.life.on_moment(m.moment_id, m.rule, m.status, at)]
            a: Alert | None
            if is_new:
                stage = tl.life.stage or "new"
                rec = self._playbooks.select(m.rule, m.channel, tl.life.spend_cents, stage)
                a, _ = tl.alerts.on_moment(m.rule, m.moment_id, m.at, int(now * 1000), channel=m.channel,
                                           store_id=m.store_id, team=team, severity=severity,
                                           delivery=list(delivery), recovery=m.status, latency_ms=latency,
                                           action=rec.action, action_detail=rec.detail, value_band=rec.band,
                                           lifecycle_stage=stage, escalate_to=rec.escalate_to)
            else:
                a = tl.alerts.on_recovery(m.rule, m.moment_id, m.status, m.at)
                if m.status == "unrecovered":
                    current = tl.alerts.alerts.get(m.rule)
                    if current is not None:
                        to_team, to_severity = self._playbooks.escalation(current.severity, current.escalate_to)
                        a = tl.alerts.escalate(m.rule, m.moment_id, to_team, to_severity, m.recovery_deadline) or a
            if a is not None:
                self._publish_alert(a, tl.customer_id, now)
                if a.revision == 1 and self._on_alert is not None:
                    self._on_alert(team, severity)
            if m.status in ("recovered", "unrecovered") and self._on_recovery is not None:
                self._on_recovery(m.rule, m.status)
            if is_new and self._on_moment is not None:
                self._on_moment(m.rule, latency / 1000 if latency is not None else -1.0)
        self._moments = []
        for tl, c in self._life:
            self._rows.publish(CUSTOMERS_TOPIC, tl.customer_id,
                               lifecycle_row(tl.customer_id, c, tl.life, self._version()))
        self._life = []

    def _publish_alert(self, a: Alert, customer: str, now: float) -> None:
        self._rows.publish(ALERTS_TOPIC, customer, {
            "alert_id": a.alert_id, "moment_id": a.moment_id, "rule": a.rule, "team": a.team,
            "severity": a.severity, "customer_id": customer, "channel": a.channel, "store_id": a.store_id,
            "status": a.status, "recovery_status": a.recovery, "delivery": list(a.delivery),
            "created_at": a.opened_wall / 1000, "updated_at": now, "latency_ms": a.latency_ms,
            "revision": a.revision, "occurrences": a.occurrences, "actor": a.actor, "note": a.note,
            "action": a.action, "action_detail": a.action_detail, "value_band": a.value_band,
            "lifecycle_stage": a.lifecycle_stage, "escalated": int(a.escalated == a.moment_id),
            "version": self._version()})

    def _emit(self, changes: Changes, dirty: dict[str, Timeline]) -> None:
        latest: dict[str, tuple[Session, str, str]] = {}
        for s, status, customer in changes.sessions:  # the last status in this record wins
            latest[s.session_id] = (s, status, customer)
        for s, status, customer in latest.values():
            self._rows.publish(SESSIONS_TOPIC, customer, session_row(s, customer, status, self._version()))
        seen = set()
        for j in reversed(changes.journeys):
            if j.journey_id in seen:
                continue
            seen.add(j.journey_id)
            self._rows.publish(JOURNEYS_TOPIC, j.customer_id, j.as_row(self._version()))

    def _version(self) -> int:
        """The version of a published row (landing keeps the highest per id): the wall clock in
        ms × 1000 plus a counter, and always strictly above the last one. Several rows of one id
        often go out within a millisecond (a moment opened, then recovered by the next event of
        the same record); the counter, taken modulo 1000, would now and then wrap between two of
        them and landing would keep the older row (the recovered moment would stay open)."""
        self._seq += 1
        self._last_version = max(int(self._clock() * 1000) * 1000 + self._seq % 1000, self._last_version + 1)
        return self._last_version

    def flush(self) -> None:
        """Output first, state second, both acknowledged before this returns (the caller acks its
        input after it). A crash in between leaves the state behind the output, never ahead of
        it: the replayed input then re-derives the same rows (deterministic ids, idempotent
        landing) instead of finding its moments already recorded as fired and staying silent."""
        self._rows.flush()
        self.table.flush()
        self.merges.flush()
        self._rows.flush()
        if self._erasures:
            erasures, self._erasures = self._erasures, []
            for e in erasures:
                self._rows.produce(ERASURES_TOPIC, 0, str(e["erasure_id"]).encode(), json.dumps(e).encode())
            self._rows.flush()


def encode_state(key: str, value: Any) -> bytes:
    return json.dumps(value.to_json() if isinstance(value, Timeline) else value, separators=(",", ":")).encode()


def decode_state(key: str, raw: bytes) -> Any:
    """A Timeline; the raw JSON of an old bookkeeping key (`merge_book.migrate` moves it)."""
    d = json.loads(raw)
    return d if legacy_key(key) is not None else Timeline.from_json(d)


def lifecycle_row(customer: str, c: Change, life: Any, version: int) -> dict[str, Any]:
    return {"customer_id": customer, "stage": c.stage, "previous_stage": c.previous, "reason": c.reason,
            "changed_at": c.at / 1000, "purchases_90d": len(life.purchases), "open_moments": len(life.open_moments),
            "version": version}


def session_row(s: Session, customer: str, status: str, version: int) -> dict[str, Any]:
    types: dict[str, int] = {}
    for t in s.touches:
        types[t.event_type] = types.get(t.event_type, 0) + 1
    return {"session_id": s.session_id, "customer_id": customer, "channel": s.channel, "subject": s.subject,
            "started_at": (s.touches[0].at if s.touches else 0) / 1000,
            "ended_at": (s.touches[-1].at if s.touches else 0) / 1000,
            "events": len(s.touches), "event_ids": [t.event_id for t in s.touches], "event_types": types,
            "store_id": next((t.store_id for t in s.touches if t.store_id), None), "status": status,
            "late": int(s.late), "is_deleted": int(status == "deleted"), "version": version}
