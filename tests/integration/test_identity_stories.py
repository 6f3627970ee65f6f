"""Identity, sessions and journeys on the real pipeline (broker + worker + sink + chdb), one story
each, asserted on ClickHouse rows: anonymous then login, loyalty scan in store, a family sharing
one device, a call about a web order."""
from __future__ import annotations

import time

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import publish_events
from cem.kafka.admin import partitions_of
from cem.schemas.registry import default_registry
from cem.settings import RAW_TOPICS
from tests.support.ch import clickhouse
from tests.support.pipeline import start, stop_role, wait_caught_up

pytestmark = pytest.mark.integration
MIN = 60_000


def ev(eid: str, channel: str, etype: str, at: int, attrs: dict | None = None, store: str | None = None, **ids):
    return {"event_id": eid, "event_type": etype, "channel": channel, "occurred_at": at, "received_at": at,
            "source": "story", "identifiers": ids, "store_id": store, channel: attrs or {}}


def test_identity_session_and_journey_stories(cem_settings):
    s = cem_settings.model_copy(update={"idle_timeout_seconds": 3.0, "tick_seconds": 1.0})
    kafka = KafkaConnection.from_settings(s)
    t = int(time.time() * 1000) - 2 * 86_400_000
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    reg = default_registry()
    stories = [
        # 1. anonymous browsing, then a login in the same browser, then the app on another device
        [ev("an-1", "web", "page_view", t, {"url": "/"}, anonymous_id="anon-1"),
         ev("an-2", "web", "search", t + MIN, {"query": "lamp", "results_count": 4}, anonymous_id="anon-1")],
        [ev("an-3", "web", "login", t + 2 * MIN, {"url": "/login"}, anonymous_id="anon-1", customer_id="C-1")],
        [ev("an-4", "web", "page_view", t + 90 * MIN, {"url": "/"}, anonymous_id="anon-9", customer_id="C-1")],
        # 2. a loyalty card scanned in store, a purchase on it, then the web login that carries the card
        [ev("ls-1", "store", "visit_started", t, store="store-03", loyalty_id="L-2"),
         ev("ls-2", "store", "loyalty_scan", t + 5 * MIN, {"terminal_id": "pos-1"}, store="store-03", loyalty_id="L-2"),
         ev("ls-3", "store", "purchase", t + 6 * MIN, {"terminal_id": "pos-1", "amount_cents": 2500, "currency": "EUR"},
            store="store-03", loyalty_id="L-2")],
        [ev("ls-4", "web", "login", t + 3 * 60 * MIN, {"url": "/login"}, anonymous_id="anon-2", customer_id="C-2",
            loyalty_id="L-2")],
        # 3. a family: two people log in on one shared tablet — never one customer
        [ev("fa-1", "web", "login", t, {"url": "/login"}, device_id="tablet-3", customer_id="C-3a")],
        [ev("fa-2", "web", "login", t + 60 * MIN, {"url": "/login"}, device_id="tablet-3", customer_id="C-3b")],
        # 4. an order on the web, then a phone call about that order from an unknown number
        [ev("co-1", "web", "order_placed", t, {"product_id": "sku-1", "amount_cents": 9900, "currency": "EUR"},
            anonymous_id="anon-4", customer_id="C-4", order_id="O-4")],
        [ev("co-2", "phone", "call_started", t + 24 * 60 * MIN, {"call_id": "call-4"}, phone_hash="ph-4",
            order_id="O-4"),
         ev("co-3", "phone", "call_ended", t + 24 * 60 * MIN + 4 * MIN,
            {"call_id": "call-4", "reason": "order_status", "resolved": True}, phone_hash="ph-4", order_id="O-4")],
    ]
    worker, sink = start("worker", s), start("sink", s)
    try:
        # together, keyed by their own identifiers: partitions interleave them in any order
        # (within the allowed lateness), as the channels' systems would
        publish_events(kafka, [e for batch in stories for e in batch], reg, parts)
        wait_caught_up(s, (worker, sink))
        time.sleep(s.idle_timeout_seconds + 4 * s.tick_seconds)  # quiet: event time follows the clock
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        cust = dict(c.query("SELECT t.event_id, if(a.canonical_id != '', a.canonical_id, t.customer_id) "
                            "FROM touchpoints AS t FINAL LEFT JOIN customer_aliases AS a "
                            "ON a.customer_id = t.customer_id").result_rows)
        sessions = {tuple(sorted(r[0])): r[1:] for r in c.query(
            "SELECT event_ids, channel, status, customer_id FROM sessions FINAL WHERE is_deleted = 0").result_rows}
        merges = c.query("SELECT status, reason, event_id FROM identity_merges FINAL").result_rows
        journeys = c.query("SELECT customer_id, channels, outcome FROM journeys FINAL").result_rows
    assert len(cust) == 13
    # 1. one customer from the first anonymous page view to the app on another device
    assert cust["an-1"] == cust["an-2"] == cust["an-3"] == cust["an-4"]
    assert sessions[("an-1", "an-2", "an-3")][:2] == ("web", "closed")  # the login continued the same visit
    # 2. the store customer and the web login with the card are one customer; the visit is one session
    assert cust["ls-1"] == cust["ls-2"] == cust["ls-3"] == cust["ls-4"]
    assert sessions[("ls-1", "ls-2", "ls-3")][:2] == ("store", "closed")
    # 3. the shared tablet links nobody: two customers, and the refusal is on record with its reason
    assert cust["fa-1"] != cust["fa-2"]
    refused = [m for m in merges if m[0] == "refused" and m[2] in ("fa-1", "fa-2")]  # whichever came second
    assert len(refused) == 1 and "limit:customer_id" in refused[0][1]
    assert not [m for m in merges if m[0] == "merged" and m[2] in ("fa-1", "fa-2")]
    # 4. the call about the web order belongs to the web customer: the order ended a web journey
    # with a purchase, the call opened the customer's next one, which ended resolved
    assert cust["co-1"] == cust["co-2"] == cust["co-3"]
    assert sessions[("co-2", "co-3")][:2] == ("phone", "closed")
    mine = sorted((tuple(j[1]), j[2]) for j in journeys if j[0] == cust["co-1"])
    assert mine == [(("phone",), "resolution"), (("web",), "purchase")]
