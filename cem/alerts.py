"""Alert lifecycle per customer (pure): open → acknowledged → resolved, reopened on recurrence.

One alert per (customer, rule), as PagerDuty and Opsgenie group by a dedup key:
- the first moment opens it (id derived from that moment: deterministic, a replay never pages twice);
- a further moment while it is open or acknowledged only counts an occurrence (no new page);
- a moment after it was resolved reopens it (status open again, a new revision: pages again);
- a person acknowledges or resolves it (`cem alerts ack|resolve`), or the customer's recovery
  resolves it (actor `recovery`) when the recovered moment is the alert's latest one.
- the alert carries the recovery action its playbook recommends (cem/playbooks.py) for the
  latest moment, with the customer's value band and lifecycle stage when it was chosen;
- when the latest moment's recovery window closes unrecovered while the alert is not resolved,
  the alert escalates, once per moment: severity up, to the escalation team (a second route),
  actor `escalation`, a new revision (pages again). The moment's unrecovered transition happens
  once in the detector's state, and the alert remembers the moment it escalated for, so a replay
  or a repeated transition never escalates twice.
`revision` counts status changes; a webhook is delivered once per (alert id, revision). A resolved
alert is forgotten `FORGET_AFTER_MS` of event time after it was resolved; a later moment then opens a
new alert.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

FORGET_AFTER_MS = 7 * 86_400_000
ACTIONS = {"ack": "acknowledged", "resolve": "resolved"}


def alert_id(first_moment_id: str) -> str:
    return hashlib.sha1(f"alert|{first_moment_id}".encode()).hexdigest()[:16]


@dataclass
class Alert:
    alert_id: str
    rule: str
    moment_id: str           # the latest moment counted in it
    status: str = "open"     # open | acknowledged | resolved
    revision: int = 1
    occurrences: int = 1
    actor: str | None = None
    note: str | None = None
    updated_at: int = 0      # event time (ms) of the last change
    opened_wall: int = 0     # wall clock (ms) when first opened: the row's created_at
    channel: str = ""        # of the latest moment, as are store_id and recovery
    store_id: str | None = None
    team: str = ""
    severity: str = ""
    delivery: tuple[str, ...] | list[str] = ()
    recovery: str = "open"   # the latest moment's recovery status
    latency_ms: float | None = None  # receipt of the trigger -> the page, for the last (re)open
    action: str = ""         # the recommended recovery action (playbook) for the latest moment
    action_detail: str = ""
    value_band: str = ""     # the customer's lifetime spend band and lifecycle stage when chosen
    lifecycle_stage: str = ""
    escalate_to: str | None = None   # the team an unrecovered moment escalates to (None: default)
    escalated: str | None = None     # the moment this alert escalated for


class AlertBook:
    """The alerts of one customer, keyed by rule. Every method returns the alert when its row
    must be (re)published, or None when nothing changed."""

    def __init__(self, alerts: dict[str, Alert] | None = None):
        self.alerts: dict[str, Alert] = alerts or {}

    def on_moment(self, rule: str, moment_id: str, at: int, wall_ms: int, **latest: Any) -> tuple[Alert, bool]:
        """Count a new moment of `rule`; `latest` sets channel, store_id, team, severity,
        delivery, recovery, latency_ms from it. Returns (alert, pages): pages is True when the
        alert opened or reopened."""
        recovered = latest.get("recovery") == "recovered"  # a positive signal came first
        a = self.alerts.get(rule)
        if a is None:
            a = self.alerts[rule] = Alert(alert_id(moment_id), rule, moment_id, updated_at=at, opened_wall=wall_ms)
            if recovered:  # born recovered: recorded, nobody paged
                a.status, a.actor = "resolved", "recovery"
            pages = not recovered
        elif a.moment_id == moment_id:  # the same moment again (replay or re-detection): no change
            return a, False
        else:
            a.moment_id, a.occurrences, a.updated_at = moment_id, a.occurrences + 1, max(a.updated_at, at)
            pages = False
            if a.status == "resolved" and not recovered:  # recurrence: reopen and page again
                a.status, a.revision, a.actor, a.note = "open", a.revision + 1, None, None
                pages = True
            elif a.status != "resolved" and recovered:
                a.status, a.revision, a.actor, a.note = "resolved", a.revision + 1, "recovery", None
        latency = latest.pop("latency_ms", None)
        for k, v in latest.items():
            setattr(a, k, v)
        if pages:
            a.latency_ms = latency
        return a, pages

    def on_recovery(self, rule: str, moment_id: str, status: str, at: int) -> Alert | None:
        """The recovery status of a moment changed: 'recovered' resolves the alert (actor
        `recovery`) when it is the alert's latest moment; 'unrecovered' is only recorded."""
        a = self.alerts.get(rule)
        if a is None or a.moment_id != moment_id or a.recovery == status:
            return None
        a.recovery = status
        if status == "recovered" and a.status != "resolved":
            a.status, a.revision, a.actor, a.note = "resolved", a.revision + 1, "recovery", None
            a.updated_at = max(a.updated_at, at)
        return a

    def escalate(self, rule: str, moment_id: str, team: str, severity: str, at: int) -> Alert | None:
        """The moment's recovery window closed unrecovered: escalate the alert once (severity,
        second route) when the moment is its latest and it is not resolved; None otherwise."""
        a = self.alerts.get(rule)
        if a is None or a.moment_id != moment_id or a.status == "resolved" or a.escalated == moment_id:
            return None
        a.escalated, a.team, a.severity = moment_id, team, severity
        a.revision, a.actor = a.revision + 1, "escalation"
        a.note = "recovery window closed unrecovered"
        a.updated_at = max(a.updated_at, at)
        return a

    def act(self, alert: str, action: str, actor: str, note: str | None, at: int) -> Alert | None:
        """A person's action; None if the alert is unknown or already in that state."""
        status = ACTIONS[action]
        a = next((x for x in self.alerts.values() if x.alert_id == alert), None)
        if a is None or a.status == status or (a.status == "resolved" and status == "acknowledged"):
            return None
        a.status, a.revision, a.actor, a.note, a.updated_at = status, a.revision + 1, actor, note, max(a.updated_at, at)
        return a

    def absorb(self, other: "AlertBook") -> None:
        """Identity merge: the other profile's alerts join; one alert per rule survives (the
        earlier opened), counting both sides' occurrences."""
        for rule, theirs in other.alerts.items():
            mine = self.alerts.get(rule)
            if mine is None:
                self.alerts[rule] = theirs
            elif theirs.alert_id != mine.alert_id:
                keep, drop = (mine, theirs) if mine.opened_wall <= theirs.opened_wall else (theirs, mine)
                keep.occurrences += drop.occurrences
                self.alerts[rule] = keep

    def prune(self, watermark: int) -> None:
        for rule in [r for r, a in self.alerts.items()
                     if a.status == "resolved" and a.updated_at < watermark - FORGET_AFTER_MS]:
            del self.alerts[rule]

    def to_json(self) -> dict[str, Any]:
        return {r: dict(a.__dict__) for r, a in self.alerts.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "AlertBook":
        return cls({r: Alert(**a) for r, a in (d or {}).items()})
