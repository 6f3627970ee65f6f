"""Customer lifecycle (pure): new → active → satisfied → loyal → advocate, or at_risk → lost,
with the reason for every change — the service-recovery loop made visible per customer.

Transitions, in event time (the first that applies wins; each returns a `Change` with its reason):
- new:        the first touch of a profile.
- active:     a purchase or order, or a second session (new → active); a lost customer who
              comes back is active again ("returned after N days").
- at_risk:    a negative moment that is unrecovered when its recovery window closes, a
              detractor score (NPS ≤ 6), or a second negative moment still open at once —
              from any stage but lost.
- satisfied:  a positive signal (NPS ≥ 9, CSAT ≥ 4, a resolved contact) or a recovered moment,
              from new, active or at_risk (the latter is a customer won back).
- loyal:      a third purchase within 90 days while satisfied, with no unrecovered moment in
              those 90 days.
- advocate:   a promoter score (NPS ≥ 9) while loyal.
- lost:       60 days without any touch while at_risk (an event-time timer).

Beside the stage, a customer's lifetime spend (`spend_cents`: the amounts of every purchase and
order seen, summed across identity merges) is their value for the recovery playbooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DAY = 86_400_000
LOYAL_WINDOW_MS = 90 * DAY
LOYAL_PURCHASES = 3
LOST_AFTER_MS = 60 * DAY
STAGES = ("new", "active", "satisfied", "loyal", "advocate", "at_risk", "lost")
PURCHASES = frozenset({"purchase", "order_placed"})


@dataclass(frozen=True)
class Change:
    stage: str
    previous: str | None
    reason: str
    at: int


@dataclass
class Lifecycle:
    stage: str | None = None
    since: int = 0
    last_touch: int = 0
    sessions: int = 0
    purchases: list[int] = field(default_factory=list)      # event times within the loyalty window
    unrecovered: list[int] = field(default_factory=list)    # when moments went unrecovered (90 days)
    open_moments: list[str] = field(default_factory=list)
    spend_cents: int = 0   # lifetime spend: amount_cents of every purchase and order (customer value)

    def _to(self, stage: str, reason: str, at: int) -> Change | None:
        if stage == self.stage:
            return None
        prev, self.stage, self.since = self.stage, stage, at
        return Change(stage, prev, reason, at)

    # -- inputs -----------------------------------------------------------------------------
    def on_touch(self, event_type: str, at: int, positive: bool, nps: int | None, new_session: bool) -> list[Change]:
        out: list[Change | None] = []
        gap = at - self.last_touch if self.last_touch else 0
        self.last_touch = max(self.last_touch, at)
        if self.stage is None:
            out.append(self._to("new", f"first touch: {event_type}", at))
        elif self.stage == "lost":
            out.append(self._to("active", f"returned after {gap // DAY} days: {event_type}", at))
        if new_session:
            self.sessions += 1
        if event_type in PURCHASES:
            self.purchases = [p for p in self.purchases if p > at - LOYAL_WINDOW_MS] + [at]
        if self.stage == "new" and (event_type in PURCHASES or self.sessions >= 2):
            out.append(self._to("active", "first purchase" if event_type in PURCHASES else "second session", at))
        if nps is not None and nps <= 6 and self.stage != "lost":
            out.append(self._to("at_risk", f"detractor score: NPS {nps}", at))
        elif positive:
            out += self._positive(f"positive signal: {event_type}" + (f" (NPS {nps})" if nps is not None else ""), at)
            if nps is not None and nps >= 9 and self.stage == "loyal":
                out.append(self._to("advocate", f"promoter while loyal: NPS {nps}", at))
        if event_type in PURCHASES and self.stage == "satisfied":
            recent_bad = [u for u in self.unrecovered if u > at - LOYAL_WINDOW_MS]
            if len(self.purchases) >= LOYAL_PURCHASES and not recent_bad:
                out.append(self._to("loyal", f"{len(self.purchases)} purchases in 90 days, no unrecovered moment", at))
        return [c for c in out if c is not None]

    def on_spend(self, event_type: str, amount_cents: object) -> None:
        """Add a purchase's or order's amount to the lifetime spend (called once per new touch;
        an amount that is not a positive whole number adds nothing)."""
        if event_type in PURCHASES and isinstance(amount_cents, int) and not isinstance(amount_cents, bool) \
                and amount_cents > 0:
            self.spend_cents += amount_cents

    def _positive(self, reason: str, at: int) -> list[Change]:
        if self.stage in ("new", "active"):
            return [c for c in [self._to("satisfied", reason, at)] if c]
        if self.stage == "at_risk" and not self.open_moments:
            return [c for c in [self._to("satisfied", f"won back: {reason}", at)] if c]
        return []

    def on_moment(self, moment_id: str, rule: str, status: str, at: int) -> list[Change]:
        """A moment was detected, or its recovery status changed."""
        out: list[Change | None] = []
        if status == "open":
            if moment_id not in self.open_moments:
                self.open_moments.append(moment_id)
            if len(self.open_moments) >= 2 and self.stage not in ("lost", "at_risk"):
                out.append(self._to("at_risk", f"{len(self.open_moments)} negative moments open, latest {rule}", at))
            return [c for c in out if c]
        if moment_id in self.open_moments:
            self.open_moments.remove(moment_id)
        if status == "unrecovered":
            self.unrecovered = [u for u in self.unrecovered if u > at - LOYAL_WINDOW_MS] + [at]
            if self.stage != "lost":
                out.append(self._to("at_risk", f"{rule} not recovered within its window", at))
        elif status == "recovered":
            out += self._positive(f"recovered from {rule}", at)
        return [c for c in out if c]

    def on_watermark(self, wm: int) -> list[Change]:
        if self.stage == "at_risk" and self.last_touch and wm >= self.last_touch + LOST_AFTER_MS:
            c = self._to("lost", f"no touch for {LOST_AFTER_MS // DAY} days while at risk",
                         self.last_touch + LOST_AFTER_MS)
            return [c] if c else []
        return []

    def absorb(self, other: "Lifecycle") -> None:
        """Identity merge: the surviving profile keeps its stage (or takes the other's if it has
        none yet) and counts both sides' sessions, purchases and moments."""
        if self.stage is None:
            self.stage, self.since = other.stage, other.since
        self.last_touch = max(self.last_touch, other.last_touch)
        self.sessions += other.sessions
        self.purchases = sorted(set(self.purchases) | set(other.purchases))
        self.unrecovered = sorted(set(self.unrecovered) | set(other.unrecovered))
        self.open_moments += [m for m in other.open_moments if m not in self.open_moments]
        self.spend_cents += other.spend_cents

    def next_deadline(self) -> int | None:
        return self.last_touch + LOST_AFTER_MS if self.stage == "at_risk" and self.last_touch else None

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "since": self.since, "last_touch": self.last_touch, "sessions": self.sessions,
                "purchases": self.purchases, "unrecovered": self.unrecovered, "open_moments": self.open_moments,
                "spend_cents": self.spend_cents}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "Lifecycle":
        return cls(**d) if d else cls()
