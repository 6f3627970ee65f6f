"""Sessions per customer and channel, on event time (pure).

A session belongs to a *subject* — what the channel itself calls one interaction — so that an
identity merge never splits it: web → the browser (anonymous_id, else device_id); store → the
customer's visit at one store; phone → the call (call_id); returns → the RMA case (rma_id);
feedback → the response itself. Within a subject, events split into sessions by channel rules:

  web: > 30 min inactivity, or 24 h maximum    store: > 60 min gap, or after visit_ended
  phone: > 2 h gap (a call carries its call_id) returns: > 30 days gap   feedback: one event each
  email: > 24 h gap (a thread)

A customer-service contact that names its case (`contact.case_id`: a chat, a contact form, a
service-desk visit, an email) is an interaction of its own: its subject is the case, so a chat
never merges into the browsing around it.

A session is **final** once the watermark (max event time − allowed lateness) passes its last
event plus the gap, or its terminal event (visit_ended, call_ended, refund_issued): no event
that is on time can join it any more. Until then it is open and may grow, split or join with a
neighbour when out-of-order events arrive, so shuffled input within the lateness gives the same
sessions as sorted input. An event older than the watermark on arrival is **late**: it becomes
a session of its own, flagged late. Session ids hash (channel, subject, first event id): stable
across identity merges.
"""
from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
GAP = {"web": 30 * MIN, "store": 60 * MIN, "phone": 2 * HOUR, "returns": 30 * DAY, "feedback": 0,
       "email": DAY}
MAX_DURATION = {"web": 24 * HOUR}
TERMINAL = {"store": "visit_ended", "phone": "call_ended", "returns": "refund_issued"}


@dataclass(frozen=True, slots=True)
class Touch:
    """What sessions, journeys and rules need of a touchpoint."""
    at: int
    event_id: str
    event_type: str
    channel: str
    subject: str
    store_id: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


def subject_of(event: Mapping[str, Any]) -> str:
    ch = event["channel"]
    ids = event.get("identifiers") or {}
    attrs = event.get(ch) or {}
    if isinstance(attrs, tuple):
        attrs = attrs[1]
    case = _contact(event).get("case_id")
    if case and ch != "phone":
        return f"case:{case}"
    if ch == "web":
        return ids.get("anonymous_id") or ids.get("device_id") or "web"
    if ch == "store":
        return f"visit:{event.get('store_id') or '-'}"
    if ch == "phone":
        return attrs.get("call_id") or ids.get("phone_hash") or "call"
    if ch == "returns":
        return attrs.get("rma_id") or ids.get("order_id") or "rma"
    if ch == "email":
        return attrs.get("thread_id") or event["event_id"]
    return event["event_id"]


def _contact(event: Mapping[str, Any]) -> Mapping[str, Any]:
    c = event.get("contact") or {}
    return c[1] if isinstance(c, tuple) else c


def touch_of(event: Mapping[str, Any]) -> Touch:
    ch = event["channel"]
    attrs = event.get(ch) or {}
    if isinstance(attrs, tuple):
        attrs = attrs[1]
    kept = {k: v for k, v in attrs.items() if v is not None}
    for k, v in _contact(event).items():  # topic, case_id, resolved: what rules see of a contact
        if v is not None and k not in kept:  # a call's own `resolved` wins
            kept[k] = v
    order = (event.get("identifiers") or {}).get("order_id")
    if order:
        kept["_order_id"] = order  # rules may group contacts by the order they are about
    return Touch(event["occurred_at"], event["event_id"], event["event_type"], ch, subject_of(event),
                 event.get("store_id"), kept)


def session_id(channel: str, subject: str, first_event_id: str) -> str:
    return hashlib.sha1(f"{channel}|{subject}|{first_event_id}".encode()).hexdigest()[:16]


@dataclass
class Session:
    session_id: str
    channel: str
    subject: str
    touches: list[Touch]
    late: bool = False

    @property
    def started_at(self) -> int:
        return self.touches[0].at

    @property
    def last_at(self) -> int:
        return self.touches[-1].at

    def final_at(self) -> int:
        """Event time from which no on-time event can join this session."""
        term = TERMINAL.get(self.channel)
        if term and self.touches[-1].event_type == term:
            return self.last_at
        return self.last_at + GAP[self.channel]


def split(channel: str, subject: str, touches: list[Touch]) -> list[Session]:
    """Cut a subject's time-ordered touches into sessions by the channel's rules."""
    out: list[Session] = []
    cur: list[Touch] = []
    gap = GAP[channel]
    longest = MAX_DURATION.get(channel)
    term = TERMINAL.get(channel)
    for t in touches:
        if cur and (channel == "feedback" or t.at - cur[-1].at > gap
                    or (longest is not None and t.at - cur[0].at > longest)
                    or (term is not None and cur[-1].event_type == term and channel == "store")):
            out.append(Session(session_id(channel, subject, cur[0].event_id), channel, subject, cur))
            cur = []
        cur.append(t)
    if cur:
        out.append(Session(session_id(channel, subject, cur[0].event_id), channel, subject, cur))
    return out


@dataclass
class SubjectState:
    """The not-yet-final touches of one subject, kept sorted by (time, event id)."""
    channel: str
    subject: str
    touches: list[Touch] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)  # ids of open sessions already published

    def add(self, t: Touch) -> bool:
        key = (t.at, t.event_id)
        keys = [(x.at, x.event_id) for x in self.touches]
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return False  # a redelivered event
        self.touches.insert(i, t)
        return True

    def sessions(self) -> list[Session]:
        return split(self.channel, self.subject, self.touches)

    def take_final(self, watermark: int) -> list[Session]:
        """Remove and return the sessions that are final at `watermark`."""
        sessions = self.sessions()
        final = [s for s in sessions if s.final_at() <= watermark]
        if final:
            keep = {t.event_id for s in sessions if s not in final for t in s.touches}
            self.touches = [t for t in self.touches if t.event_id in keep]
        return final

    def next_deadline(self) -> int | None:
        sessions = self.sessions()
        return min(s.final_at() for s in sessions) if sessions else None

    def absorb(self, other: "SubjectState") -> None:
        for t in other.touches:
            self.add(t)
        self.emitted |= other.emitted
