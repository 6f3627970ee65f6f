"""Alert webhooks, the pure part: which alert versions are delivered, how a delivery is signed,
when a failed attempt is retried, and the ledger that keeps a replay from paging twice.

Contract (what a receiving team can rely on — the same scheme as Stripe's and Svix's webhooks):
- One delivery per (alert id, revision): an alert is delivered when it opens, and again on every
  status change (acknowledged, resolved by a person or by the customer's recovery, reopened by a
  recurrence); a further occurrence while it is open changes no revision and pages nobody.
  The delivery id `<alert_id>:<revision>` is sent as `Cem-Delivery-Id`; a replay of the pipeline
  produces the same id and the ledger suppresses it. The body's `type` is `alert.open`,
  `alert.acknowledged`, `alert.resolved`, `alert.reopened` or `alert.escalated` (its moment's
  recovery window closed unrecovered: a new revision with severity up, to the escalation team).
  The alert carries the recommended recovery `action` and `action_detail` (its playbook), the
  customer's `value_band` and `lifecycle_stage`, and `escalated` (1 once escalated).
- `Cem-Timestamp` (unix seconds) and `Cem-Signature: v1=<hex>` = HMAC-SHA256(secret,
  "<timestamp>.<body>"). Receivers recompute it over the raw body and reject a signature that
  does not match or a timestamp older than their tolerance (5 minutes is usual).
- A 2xx answer delivers; 408, 429 and 5xx answers, timeouts and connection errors are retried
  with capped exponential backoff and jitter (`Retry-After` is honoured); any other 4xx and the
  last allowed attempt park the delivery (dead-lettered with the reason, never retried blindly).
- A parked delivery is not forgotten: its body stays in the ledger and it is retried later
  (`plan_round`): every `park_retry_seconds` one parked delivery per endpoint is sent as a probe;
  when the probe is accepted, the endpoint is back and every other delivery parked for it is
  queued again under the normal retry policy. `cem notify --retry-parked` queues them at once
  (after a fix on the receiving side). A delivery still parked after `park_hours` expires: its
  final outcome `expired` goes to the ledger and cem.dlq. The endpoint used for a retry is the
  one configured *now* for the alert's team, so correcting CEM_WEBHOOK_ENDPOINTS takes effect.
- Delivery is at-least-once: if the dispatcher dies after the receiver answered 2xx but before
  the ledger recorded it, the delivery is sent once more with the same `Cem-Delivery-Id`, which a
  receiver deduplicates on.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

RETRYABLE = frozenset({408, 425, 429})


def delivery_id(alert: Mapping[str, Any]) -> str:
    return f"{alert['alert_id']}:{alert.get('revision') or 1}"


def event_type(alert: Mapping[str, Any]) -> str:
    if alert.get("actor") == "escalation" and alert["status"] != "resolved":
        return "alert.escalated"
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


#: Ledger outcomes whose entry keeps the body: the delivery is retried later.
WAITING = frozenset({"parked", "requeued"})


class Ledger:
    """Delivery id → outcome ('delivered', 'parked', 'requeued', 'expired'), replayed from the
    compacted ledger topic; a delivery in it is never started again from an alert replay. Parked
    and requeued entries keep their ledger record (body included) for `plan_round`."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}
        self.waiting: dict[str, dict[str, Any]] = {}

    def record(self, delivery: str, outcome: str, entry: Mapping[str, Any] | None = None) -> None:
        self._done[delivery] = outcome
        if outcome in WAITING and entry is not None and entry.get("body") is not None:
            self.waiting[delivery] = dict(entry)
        else:
            self.waiting.pop(delivery, None)

    def done(self, delivery: str) -> bool:
        return delivery in self._done

    def outcome(self, delivery: str) -> str | None:
        return self._done.get(delivery)

    def __len__(self) -> int:
        return len(self._done)


@dataclass
class Round:
    """What one retry round does with the parked deliveries: ids, and for those sent, the URL."""
    probes: dict[str, str] = field(default_factory=dict)   # one per endpoint: sent once, re-parked on failure
    requeue: dict[str, str] = field(default_factory=dict)  # sent again under the normal retry policy
    expire: list[str] = field(default_factory=list)        # parked longer than park_hours: given up
    unroutable: list[str] = field(default_factory=list)    # no endpoint configured for the team any more


def endpoint_now(entry: Mapping[str, Any], endpoints: Mapping[str, str]) -> str | None:
    """The URL a parked delivery goes to today (its team's current endpoint)."""
    try:
        alert = json.loads(entry["body"])["alert"]
    except (ValueError, KeyError, TypeError):
        return None
    return wants_webhook(alert, endpoints)


def plan_round(waiting: Mapping[str, Mapping[str, Any]], now_ms: int, partitions: Iterable[int],
               endpoints: Mapping[str, str], park_ms: int, skip: Iterable[str] = ()) -> Round:
    """Decide a retry round over the parked/requeued deliveries of the alert partitions this
    dispatcher owns (so two dispatchers never send the same one). Requeued entries are all sent;
    of the parked ones, the oldest per endpoint is the probe; those older than `park_ms` expire;
    any whose team has no endpoint now is unroutable. Deterministic: ties are broken by id."""
    owned, busy = set(partitions), set(skip)
    r = Round()
    probed: set[str] = set()
    for did, e in sorted(waiting.items(), key=lambda kv: (kv[1].get("parked_at") or 0, kv[0])):
        if did in busy or e.get("partition") not in owned:
            continue
        requeued = e.get("outcome") == "requeued"
        parked_at = e.get("parked_at")
        if not requeued and parked_at is not None and now_ms - parked_at > park_ms:
            r.expire.append(did)
            continue
        url = endpoint_now(e, endpoints)
        if url is None:
            r.unroutable.append(did)
        elif requeued:
            r.requeue[did] = url
        elif url not in probed:
            probed.add(url)
            r.probes[did] = url
    return r
