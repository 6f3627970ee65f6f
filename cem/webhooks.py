"""Alert webhooks, the pure part: which alert versions are delivered, how a delivery is signed,
when a failed attempt is retried, and the ledger that keeps a replay from paging twice.

Contract (what a receiving team can rely on — the same scheme as Stripe's and Svix's webhooks):
- One delivery per (alert id, revision): an alert is delivered when it opens, and again on every
  status change (acknowledged, resolved by a person or by the customer's recovery, reopened by a
  recurrence); a further occurrence while it is open changes no revision and pages nobody.
  The delivery id `<alert_id>:<revision>` is sent as `Cem-Delivery-Id`; a replay of the pipeline
  produces the same id and the ledger suppresses it. The body's `type` is `alert.open`,
  `alert.acknowledged`, `alert.resolved` or `alert.reopened`.
- `Cem-Timestamp` (unix seconds) and `Cem-Signature: v1=<hex>` = HMAC-SHA256(secret,
  "<timestamp>.<body>"). Receivers recompute it over the raw body and reject a signature that
  does not match or a timestamp older than their tolerance (5 minutes is usual).
- A 2xx answer delivers; 408, 429 and 5xx answers, timeouts and connection errors are retried
  with capped exponential backoff and jitter (`Retry-After` is honoured); any other 4xx and the
  last allowed attempt park the delivery (dead-lettered with the reason, never retried blindly).
- Delivery is at-least-once: if the dispatcher dies after the receiver answered 2xx but before
  the ledger recorded it, the delivery is sent once more with the same `Cem-Delivery-Id`, which a
  receiver deduplicates on.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from typing import Any, Mapping

RETRYABLE = frozenset({408, 425, 429})


def delivery_id(alert: Mapping[str, Any]) -> str:
    return f"{alert['alert_id']}:{alert.get('revision') or 1}"


def event_type(alert: Mapping[str, Any]) -> str:
    if alert["status"] == "open" and (alert.get("revision") or 1) > 1:
        return "alert.reopened"
    return f"alert.{alert['status']}"


def wants_webhook(alert: Mapping[str, Any], endpoints: Mapping[str, str]) -> str | None:
    """The endpoint URL for this alert, or None: routed with delivery 'webhook' and an endpoint
    configured for its team (or the '*' endpoint)."""
    if "webhook" not in (alert.get("delivery") or ()):
        return None
    return endpoints.get(alert.get("team") or "") or endpoints.get("*")


def payload(alert: Mapping[str, Any]) -> bytes:
    """The request body: a typed envelope around the alert row (stable key order)."""
    body = {"type": event_type(alert), "delivery_id": delivery_id(alert), "alert": dict(alert)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: int, body: bytes, signature: str, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 1.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds before attempt `attempt + 1` (attempt counts from 1): full jitter over
        base·2^(attempt-1), capped; a server's Retry-After wins when it asks for longer."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** (attempt - 1)))
        d = ceiling / 2 + rng.random() * ceiling / 2
        return max(d, min(retry_after, self.cap_seconds)) if retry_after else d

    def verdict(self, attempt: int, status: int | None) -> str:
        """'delivered', 'retry' or 'parked' after an attempt answered `status` (None = no answer)."""
        if status is not None and 200 <= status < 300:
            return "delivered"
        retryable = status is None or status >= 500 or status in RETRYABLE
        if retryable and attempt < self.max_attempts:
            return "retry"
        return "parked"


class Ledger:
    """Delivery id → final outcome ('delivered' or 'parked'), replayed from the compacted ledger
    topic at start; what is in it is never sent again."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}

    def record(self, delivery: str, outcome: str) -> None:
        self._done[delivery] = outcome

    def done(self, delivery: str) -> bool:
        return delivery in self._done

    def __len__(self) -> int:
        return len(self._done)
