"""Capped exponential backoff, shared by every retry loop of the adapters (pure).

A loop that retries asks `Backoff.delay(attempt)` how long to wait before attempt `attempt + 1`;
`Backoff.exhausted(attempt)` says when a bounded loop must give up and raise its own typed error
(naming what failed and what to do). A loop that retries forever (landing while ClickHouse is
down, the ingest forward while the broker is away) says why in its docstring, counts each round
in a Prometheus counter and logs it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Waits of `first`, `first * factor`, … seconds, never more than `cap`; `attempts` bounds
    the tries (None: the caller retries forever and documents why)."""

    first: float
    cap: float
    factor: float = 2.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first or self.factor < 1:
            raise ValueError(f"backoff needs 0 < first <= cap and factor >= 1, not {self}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"backoff needs at least one attempt, not {self.attempts}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first try)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, not {attempt}")
        # exponent clamped: no float overflow however long an outage lasts
        return min(self.cap, self.first * self.factor ** min(attempt - 1, 64))

    def exhausted(self, attempt: int) -> bool:
        """True once `attempt` failed tries are all this backoff allows."""
        return self.attempts is not None and attempt >= self.attempts
