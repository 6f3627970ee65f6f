"""Webhook delivery rules (pure): signature, retry verdicts, backoff, routing to an endpoint."""
from __future__ import annotations

import json
import random

from hypothesis import given, strategies as st

from cem.webhooks import Ledger, RetryPolicy, delivery_id, payload, plan_round, sign, verify, wants_webhook

ALERT = {"alert_id": "a1", "status": "open", "team": "customer-care", "rule": "payment_failed",
         "delivery": ["topic", "clickhouse", "webhook"]}


def test_signature_verifies_and_rejects_tampering_and_stale_timestamps():
    body = payload(ALERT)
    sig = sign(b"k", 1_000, body)
    assert sig.startswith("v1=") and verify(b"k", 1_000, body, sig, now=1_010)
    assert not verify(b"k", 1_000, body.replace(b"a1", b"a2"), sig, now=1_010)   # body changed
    assert not verify(b"other", 1_000, body, sig, now=1_010)                      # wrong secret
    assert not verify(b"k", 1_000, body, sig, now=1_000 + 301)                    # replayed later


def test_payload_is_deterministic_and_typed_by_status():
    assert payload(ALERT) == payload(dict(reversed(list(ALERT.items()))))
    doc = json.loads(payload(dict(ALERT, status="resolved", revision=2)))
    assert doc["type"] == "alert.resolved" and doc["delivery_id"] == "a1:2" == delivery_id(doc["alert"])
    assert json.loads(payload(dict(ALERT, revision=3)))["type"] == "alert.reopened"
    assert json.loads(payload(ALERT))["type"] == "alert.open" and delivery_id(ALERT) == "a1:1"


def test_team_endpoint_then_wildcard_and_only_when_routed_to_webhook():
    eps = {"customer-care": "http://care", "*": "http://all"}
    assert wants_webhook(ALERT, eps) == "http://care"
    assert wants_webhook(dict(ALERT, team="store-ops"), eps) == "http://all"
    assert wants_webhook(dict(ALERT, team="store-ops"), {"customer-care": "http://care"}) is None
    assert wants_webhook(dict(ALERT, delivery=["topic"]), eps) is None


def test_verdicts_retry_transient_failures_and_park_permanent_ones():
    p = RetryPolicy(max_attempts=3)
    assert p.verdict(1, 200) == p.verdict(1, 204) == "delivered"
    assert p.verdict(1, None) == p.verdict(1, 503) == p.verdict(1, 429) == p.verdict(1, 408) == "retry"
    assert p.verdict(1, 400) == p.verdict(1, 404) == p.verdict(1, 410) == "parked"
    assert p.verdict(3, 503) == "parked"  # out of attempts


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_backoff_grows_jittered_within_the_cap(attempt, seed):
    p = RetryPolicy(base_seconds=1.0, cap_seconds=60.0)
    d = p.delay(attempt, random.Random(seed))
    ceiling = min(60.0, 2 ** (attempt - 1))
    assert ceiling / 2 <= d <= ceiling
    assert p.delay(attempt, random.Random(seed), retry_after=120) >= 60.0  # Retry-After honoured up to the cap


def test_ledger_remembers_final_outcomes():
    led = Ledger()
    led.record("a1:open", "delivered")
    assert led.done("a1:open") and not led.done("a1:resolved") and len(led) == 1


def test_ledger_keeps_the_body_of_a_waiting_delivery_until_an_outcome_ends_it():
    led = Ledger()
    led.record("a1:1", "parked", {"outcome": "parked", "body": "{}"})
    assert led.done("a1:1") and set(led.waiting) == {"a1:1"}
    led.record("a1:1", "delivered", {"outcome": "delivered"})
    assert led.outcome("a1:1") == "delivered" and not led.waiting
    led.record("a2:1", "parked", {"outcome": "parked"})  # an old-format record without a body
    assert led.done("a2:1") and not led.waiting


def parked_entry(alert_id: str, team: str, parked_at: int, partition: int = 0, outcome: str = "parked") -> dict:
    body = payload(dict(ALERT, alert_id=alert_id, team=team)).decode()
    return {"outcome": outcome, "body": body, "parked_at": parked_at, "partition": partition}


def test_a_retry_round_probes_each_endpoint_once_and_expires_the_too_old():
    eps = {"customer-care": "http://care", "store-ops": "http://ops"}
    hour = 3_600_000
    waiting = {"c2:1": parked_entry("c2", "customer-care", 20 * hour),
               "c1:1": parked_entry("c1", "customer-care", 10 * hour),      # oldest of care: the probe
               "o1:1": parked_entry("o1", "store-ops", 30 * hour),
               "old:1": parked_entry("old", "store-ops", 0),                 # parked > 72 h ago
               "r1:1": parked_entry("r1", "customer-care", 40 * hour, outcome="requeued"),
               "x1:1": parked_entry("x1", "finance", 15 * hour),             # no endpoint now
               "r2:1": parked_entry("r2", "finance", 16 * hour, outcome="requeued"),  # requeued, no endpoint
               "p3:1": parked_entry("p3", "customer-care", 5 * hour, partition=3)}  # not this dispatcher's
    r = plan_round(waiting, now_ms=73 * hour, partitions=[0, 1], endpoints=eps, park_ms=72 * hour)
    assert r.probes == {"c1:1": "http://care", "o1:1": "http://ops"}
    assert r.requeue == {"r1:1": "http://care"} and r.expire == ["old:1"]
    assert r.unroutable == ["x1:1", "r2:1"]
    # a delivery already in flight here is not planned twice; the next oldest becomes the probe
    r = plan_round(waiting, now_ms=73 * hour, partitions=[0, 1], endpoints=eps, park_ms=72 * hour, skip={"c1:1"})
    assert r.probes == {"c2:1": "http://care", "o1:1": "http://ops"}
    # the endpoint configured now decides: a wildcard makes the finance delivery routable again
    r = plan_round(waiting, now_ms=73 * hour, partitions=[0, 1], endpoints=dict(eps, **{"*": "http://care"}),
                   park_ms=72 * hour)
    assert r.probes == {"c1:1": "http://care", "o1:1": "http://ops"} and not r.unroutable  # x1 waits for care's probe
