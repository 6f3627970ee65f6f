"""Webhook delivery rules (pure): signature, retry verdicts, backoff, routing to an endpoint."""
from __future__ import annotations

import json
import random

from hypothesis import given, strategies as st

from cem.webhooks import Ledger, RetryPolicy, delivery_id, payload, sign, verify, wants_webhook

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
