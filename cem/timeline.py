"""One customer's live timeline (pure): open sessions per subject and the open journey, with
event-time deadlines, serializable to plain JSON for a changelogged table.

`Timeline.add` takes a touch, `Timeline.advance(watermark)` finalizes what the watermark passed,
`Timeline.absorb` takes over another timeline (identity merge). Each returns the sessions and
journeys to publish; open sessions are published as `open` versions, final ones as `closed`,
and a session whose id changed (an earlier event arrived) as a deleted version of the old id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .alerts import AlertBook
from .lifecycle import Lifecycle
from .detect import Detector
from .journeys import Journey, add_session, expire
from .sessions import Session, SubjectState, Touch, split


@dataclass
class Changes:
    accepted: bool = True  # False for a replayed event already accounted for
    # (session, open|closed|deleted, customer id)
    sessions: list[tuple[Session, str, str]] = field(default_factory=list)
    journeys: list[Journey] = field(default_factory=list)

    def extend(self, other: "Changes") -> None:
        self.sessions += other.sessions
        self.journeys += other.journeys


#: How long (event time) a finalized event's id is remembered, so an input replay after a
#: crash does not turn it into a second session.
REMEMBER_MS = 8 * 24 * 3_600_000


@dataclass
class Timeline:
    customer_id: str
    subjects: dict[str, SubjectState] = field(default_factory=dict)
    journey: Journey | None = None
    recent: dict[str, int] = field(default_factory=dict)  # finalized event id -> its session's end
    detector: Detector = field(default_factory=Detector)
    alerts: AlertBook = field(default_factory=AlertBook)
    life: Lifecycle = field(default_factory=Lifecycle)

    @staticmethod
    def key(channel: str, subject: str) -> str:
        return f"{channel}|{subject}"

    def holds_state(self) -> bool:
        """False when nothing of this customer needs remembering (the stage then drops it)."""
        return bool(self.subjects or self.journey is not None or self.recent or not self.detector.empty()
                    or self.alerts.alerts or self.life.stage is not None)

    def add(self, t: Touch, watermark: int) -> Changes:
        ch = Changes()
        if t.event_id in self.recent:
            ch.accepted = False
            return ch  # replayed after a restart: its session is already final and published
        known = self.subjects.get(self.key(t.channel, t.subject))
        if known is not None and any(x.event_id == t.event_id for x in known.touches):
            ch.accepted = False
            return ch  # replayed, still in its open session
        if t.at < watermark:  # late beyond the allowed lateness: a session of its own
            s = split(t.channel, f"late:{t.subject}", [t])[0]
            s.late = True
            ch.sessions.append((s, "closed", self.customer_id))
            return ch
        k = self.key(t.channel, t.subject)
        state = self.subjects.get(k)
        if state is None:
            state = self.subjects[k] = SubjectState(t.channel, t.subject)
        if state.add(t):
            ch.extend(self._publish_open(state))
        return ch

    def _publish_open(self, state: SubjectState, final_ids: frozenset[str] = frozenset()) -> Changes:
        ch = Changes()
        now = {s.session_id: s for s in state.sessions()}
        for sid in sorted(state.emitted - set(now) - final_ids):
            ch.sessions.append((Session(sid, state.channel, state.subject, []), "deleted", self.customer_id))
        for s in now.values():
            ch.sessions.append((s, "open", self.customer_id))
        state.emitted = set(now)
        return ch

    def advance(self, watermark: int) -> Changes:
        ch = Changes()
        finals: list[Session] = []
        for k in sorted(self.subjects):
            state = self.subjects[k]
            final = state.take_final(watermark)
            if not final:
                continue
            state.emitted -= {s.session_id for s in final}
            finals += final
            for s in final:
                for t in s.touches:
                    self.recent[t.event_id] = s.last_at
            if not state.touches:
                del self.subjects[k]
        for s in sorted(finals, key=lambda s: (s.started_at, s.session_id)):  # journeys in time order
            ch.sessions.append((s, "closed", self.customer_id))
            self.journey, closed = add_session(self.journey, self.customer_id, s)
            ch.journeys += closed
        if self.recent:
            horizon = watermark - REMEMBER_MS
            self.recent = {e: at for e, at in self.recent.items() if at >= horizon}
        expired = expire(self.journey, watermark)
        if expired is not None:
            ch.journeys.append(expired)
            self.journey = None
        elif self.journey is not None and ch.sessions:
            ch.journeys.append(self.journey)
        return ch

    def next_deadline(self) -> int | None:
        ds = [d for s in self.subjects.values() if (d := s.next_deadline()) is not None]
        if self.journey is not None:
            ds.append(self.journey.last_at + 7 * 24 * 3_600_000)
        for d in (self.detector.next_deadline(), self.life.next_deadline()):
            if d is not None:
                ds.append(d)
        return min(ds) if ds else None

    def absorb(self, other: "Timeline") -> Changes:
        """Take over `other`'s open state (it merged into this customer)."""
        ch = Changes()
        self.recent.update(other.recent)
        self.alerts.absorb(other.alerts)
        self.life.absorb(other.life)
        self.detector.absorb(other.detector)  # rule state follows the customer
        for state in other.subjects.values():  # what this side finalized already stays final
            state.touches = [t for t in state.touches if t.event_id not in self.recent]
        for k, state in other.subjects.items():
            held = self.subjects.get(k)
            if held is None:
                self.subjects[k] = state
                held = state
            else:
                held.absorb(state)
            ch.extend(self._publish_open(held))
        if other.journey is not None:
            if self.journey is None or other.journey.started_at < self.journey.started_at:
                j = other.journey
                j.customer_id = self.customer_id
                if self.journey is not None:
                    for sid in self.journey.session_ids:
                        if sid not in j.session_ids:
                            j.session_ids.append(sid)
                self.journey = j
        return ch

    # -- JSON for the changelogged table ------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"c": self.customer_id,
                "s": {k: [st.channel, st.subject, [[t.at, t.event_id, t.event_type, t.store_id, dict(t.attrs)]
                                                    for t in st.touches], sorted(st.emitted)]
                      for k, st in self.subjects.items()},
                "j": None if self.journey is None else {
                    "id": self.journey.journey_id, "start": self.journey.started_at, "last": self.journey.last_at,
                    "ch": self.journey.channels, "ss": self.journey.session_ids, "m": self.journey.moments},
                "r": self.recent, "d": None if self.detector.empty() else self.detector.to_json(),
                "a": self.alerts.to_json() or None, "l": self.life.to_json() if self.life.stage else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Timeline":
        tl = cls(d["c"])
        for k, (channel, subject, touches, emitted) in d["s"].items():
            tl.subjects[k] = SubjectState(channel, subject,
                                          [Touch(at, eid, et, channel, subject, sid, attrs)
                                           for at, eid, et, sid, attrs in touches], set(emitted))
        tl.recent = dict(d.get("r") or {})
        tl.detector = Detector.from_json(d.get("d"))
        tl.alerts = AlertBook.from_json(d.get("a"))
        tl.life = Lifecycle.from_json(d.get("l"))
        j = d.get("j")
        if j:
            tl.journey = Journey(j["id"], tl.customer_id, j["start"], j["last"], j["ch"], j["ss"], None, j["m"])
        return tl
