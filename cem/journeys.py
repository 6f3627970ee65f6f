"""Journeys (pure): a customer's sessions across channels grouped around one goal.

A journey opens with the customer's first session and takes every following session that
starts within 7 days of the journey's last activity. It ends on an **outcome** — purchase
(order_placed, purchase), resolution (a call ended resolved) or refund (refund_issued) — at the
end of the session that reached it, or, without one, 7 days after its last activity
(outcome `inactive`). It carries the channels used in order of first use, its sessions, start
and end, and the negative moments hit (filled by the detectors). Journey ids hash the customer
and the first session id.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .sessions import Session

INACTIVITY = 7 * 24 * 3_600_000
OUTCOMES = {"order_placed": "purchase", "purchase": "purchase", "refund_issued": "refund"}


def outcome_of(session: Session) -> str | None:
    for t in session.touches:
        if t.event_type in OUTCOMES:
            return OUTCOMES[t.event_type]
        if t.event_type == "call_ended" and t.attrs.get("resolved"):
            return "resolution"
    return None


@dataclass
class Journey:
    journey_id: str
    customer_id: str
    started_at: int
    last_at: int
    channels: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    outcome: str | None = None
    moments: list[str] = field(default_factory=list)
    closed: bool = False

    def as_row(self, version: int) -> dict[str, Any]:
        return {"journey_id": self.journey_id, "customer_id": self.customer_id, "started_at": self.started_at / 1000,
                "ended_at": self.last_at / 1000, "channels": self.channels, "sessions": len(self.session_ids),
                "session_ids": self.session_ids, "outcome": self.outcome or ("open" if not self.closed else "inactive"),
                "moments": self.moments, "status": "closed" if self.closed else "open", "version": version}


def journey_id(customer_id: str, first_session_id: str) -> str:
    return hashlib.sha1(f"{customer_id}|{first_session_id}".encode()).hexdigest()[:16]


def add_session(current: Journey | None, customer_id: str,
                session: Session) -> tuple[Journey | None, list[Journey]]:
    """Fold a final session into the customer's open journey; returns (the open journey, None
    once this session's outcome closed it; the journeys closed by this step)."""
    closed: list[Journey] = []
    if current is not None and session.started_at > current.last_at + INACTIVITY:
        current.closed = True
        closed.append(current)
        current = None
    if current is None:
        current = Journey(journey_id(customer_id, session.session_id), customer_id, session.started_at,
                          session.last_at)
    if session.session_id not in current.session_ids:
        current.session_ids.append(session.session_id)
    if session.channel not in current.channels:
        current.channels.append(session.channel)
    current.started_at = min(current.started_at, session.started_at)
    current.last_at = max(current.last_at, session.last_at)
    outcome = outcome_of(session)
    if outcome is not None:
        current.outcome = outcome
        current.closed = True
        closed.append(current)
        return None, closed
    return current, closed


def expire(current: Journey | None, watermark: int) -> Journey | None:
    """The open journey if 7 days of inactivity have passed at `watermark` (then closed)."""
    if current is not None and watermark >= current.last_at + INACTIVITY:
        current.closed = True
        return current
    return None
