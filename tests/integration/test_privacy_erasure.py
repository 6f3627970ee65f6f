"""Consent and erasure on the real pipeline (broker + worker + sink + chdb).

A customer (Alice) shops in store with a loyalty card and on the web, logs in with the card (two
profiles merge), hits a payment failure (a moment, an alert); another customer (Bob) shops beside
her; a visitor without consent browses. Mid-run Alice is erased: afterwards no ClickHouse row and
no state (the identity changelog a coordinator or replica rebuilds from, the merge log, the
customer-state changelog's latest values) holds any of her identifiers or ids; Bob is untouched;
her login seen again starts a new profile; the audit row holds no identifier."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from cem.connectors.generate import publish_events
from cem.identity import IdentityGraph
from cem.kafka.admin import partitions_of
from cem.kafka.connection import KafkaConnection
from cem.kafka.publisher import BatchPublisher, producer_config
from cem.ops.procs import settings_env
from cem.sinks.landing import RECHECK_SECONDS
from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
from cem.privacy import NO_CONSENT
from cem.schemas.registry import default_registry
from cem.schemas.stage import stage_row
from cem.settings import (IDENTITY_MERGES_TOPIC, RAW_TOPICS, STAGE_TOPIC, TOUCHPOINTS_TOPIC, merge_state_topic,
                          stage_input, state_topic)
from cem.streams.identity_log import load_graph
from tests.support.ch import clickhouse
from tests.support.pipeline import other_readers, read_topic, start, stop_role, wait_caught_up

pytestmark = pytest.mark.integration
MIN = 60_000
TABLES = ("touchpoints", "sessions", "journeys", "negative_moments", "alerts", "customer_lifecycle", "customers",
          "identity_merges")
#: Alice's identifiers before the erasure; only her login comes back afterwards
GONE = ("L-ALICE-1", "anon-alice-1", "dev-alice-1", "ord-alice-1")
BACK = "C-ALICE-1"


def ev(eid: str, channel: str, etype: str, at: int, attrs: dict | None = None, store: str | None = None,
       consent: bool | None = None, **ids):
    return {"event_id": eid, "event_type": etype, "channel": channel, "occurred_at": at, "received_at": at,
            "source": "privacy-story", "identifiers": ids, "store_id": store, channel: attrs or {}, "consent": consent}


def latest(kafka: KafkaConnection, topic: str) -> dict[bytes, bytes]:
    """A compacted topic's live content: each key's latest value, tombstoned keys left out."""
    out: dict[bytes, bytes] = {}
    for m in read_topic(kafka, topic):
        if m.value() is None:
            out.pop(m.key(), None)
        else:
            out[m.key()] = m.value()
    return out


def rows_text(c, table: str) -> list[str]:
    return [r[0] for r in c.query(f"SELECT formatRow('JSONEachRow', *) FROM {table}").result_rows]


def test_erasing_a_customer_mid_run_leaves_no_trace_and_a_returning_login_is_someone_new(cem_settings):
    s = cem_settings
    t = int(time.time() * 1000) - 3 * 3_600_000
    kafka = KafkaConnection.from_settings(s)
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    reg = default_registry()
    before = [
        ev("al-1", "store", "loyalty_scan", t, {"terminal_id": "pos-1"}, store="store-1", loyalty_id="L-ALICE-1"),
        ev("al-2", "store", "purchase", t + MIN, {"terminal_id": "pos-1", "amount_cents": 1200, "currency": "EUR"},
           store="store-1", loyalty_id="L-ALICE-1"),
        ev("bo-1", "web", "page_view", t, {"url": "/"}, anonymous_id="anon-bob-1", customer_id="C-BOB-1"),
        ev("bo-2", "web", "order_placed", t + 2 * MIN, {"amount_cents": 900, "currency": "EUR"},
           anonymous_id="anon-bob-1", customer_id="C-BOB-1", order_id="ord-bob-1"),
        ev("nc-1", "web", "page_view", t + MIN, {"url": "/private"}, consent=False, anonymous_id="anon-nc-1",
           customer_id="C-NC-1"),
    ]
    web = [
        ev("al-3", "web", "page_view", t + 30 * MIN, {"url": "/"}, anonymous_id="anon-alice-1",
           device_id="dev-alice-1"),
        ev("al-4", "web", "payment_failed", t + 31 * MIN, {"error_code": "card_declined"},
           anonymous_id="anon-alice-1", device_id="dev-alice-1", order_id="ord-alice-1"),
    ]
    login = [ev("al-5", "web", "login", t + 32 * MIN, {"url": "/login"}, anonymous_id="anon-alice-1",
                customer_id=BACK, loyalty_id="L-ALICE-1")]
    worker, sink = start("worker", s), start("sink", s)
    try:
        for batch in (before, web, login):  # in turn: the store profile is the older one
            publish_events(kafka, batch, reg, parts)
            wait_caught_up(s, (worker, sink))
        merged = [json.loads(v) for v in latest(kafka, IDENTITY_MERGES_TOPIC).values()]
        merged = [m for m in merged if m["status"] == "merged"]
        assert len(merged) == 1, merged
        alice_ids = {merged[0]["winner"], merged[0]["loser"]}

        # through the command an operator runs
        out = subprocess.run([sys.executable, "-m", "cem", "privacy", "erase", f"customer_id:{BACK}",
                              "--by", "dpo@retailer.example"], env=settings_env(s), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        erasure_id = re.search(r"erasure ([0-9a-f]{32}) requested", out.stdout).group(1)
        # other traffic goes on meanwhile
        publish_events(kafka, [ev("bo-3", "web", "page_view", t + 40 * MIN, {"url": "/help"},
                                              anonymous_id="anon-bob-1", customer_id="C-BOB-1")], reg, parts)
        wait_caught_up(s, (worker, sink))
        done = time.monotonic()  # caught up includes the erasure landing applied and committed
        # her login again, after the erasure, from a new browser
        publish_events(kafka, [ev("al-9", "web", "login", t + 50 * MIN, {"url": "/login"},
                                              anonymous_id="anon-alice-9", customer_id=BACK)], reg, parts)
        wait_caught_up(s, (worker, sink))
        # a worker's replica that had not yet seen the erasure resolves one more of her events to
        # her old id: it must build no state and its row must go in landing's second pass
        stale = dict(ev("al-stale", "web", "page_view", t + 33 * MIN, {"url": "/"}, anonymous_id="anon-alice-1"),
                     cem=(RESOLUTION, {"customer_id": merged[0]["winner"], "late": False, "processed_at": 0}))
        stale["web"] = (ATTRIBUTE_RECORDS["web"], stale["web"])
        p = Producer(producer_config(kafka))
        pub = BatchPublisher(p, reg.latest("touchpoint").parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC, STAGE_TOPIC]))
        pub.publish(TOUCHPOINTS_TOPIC, merged[0]["winner"].encode(), stale)
        # and to the customer stage's input, as ingest sends every resolved event (cem.schemas.stage)
        if stage_input(s):
            pub.publish_row(STAGE_TOPIC, merged[0]["winner"].encode(), stage_row(stale, merged[0]["winner"]))
        pub.flush()
        wait_caught_up(s, (worker, sink))
        time.sleep(max(0.0, done + RECHECK_SECONDS + 5 - time.monotonic()))
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    # a worker group that reads these raw topics too (one left running by an earlier test) sends
    # her old events through the coordinator again after the erasure (README: a replay links them)
    assert not other_readers(s, list(RAW_TOPICS.values())), "another worker group read this test's events"

    # -- state: the identity changelog (what the coordinator and every replica rebuild from) ---
    graph = IdentityGraph()
    load_graph(kafka, graph)
    assert not [i for i in graph.owner if any(g in i for g in GONE)]
    assert not alice_ids & (set(graph.owner.values()) | set(graph.members) | set(graph.first_seen))
    new_profile = graph.owner[f"customer_id:{BACK}"]
    assert new_profile not in alice_ids
    assert graph.members[new_profile] == {f"customer_id:{BACK}", "anonymous_id:anon-alice-9"}
    assert graph.owner["customer_id:C-BOB-1"] and "anonymous_id:anon-nc-1" not in graph.owner
    merges_left = b"".join(latest(kafka, IDENTITY_MERGES_TOPIC).values()).decode()
    assert not any(x in merges_left for x in (*GONE, BACK, *alice_ids))
    # -- state: the customer stage's changelog, latest value per key ---------------------------
    state = latest(kafka, state_topic(s.app_id))
    assert not alice_ids & {k.decode().split(":", 1)[-1] for k in state}
    held = b"".join(state.values()).decode()
    assert not any(x in held for x in (*GONE, *alice_ids))
    assert new_profile.encode() in state
    books = latest(kafka, merge_state_topic(s.app_id))  # merge bookkeeping, its own changelog
    assert not alice_ids & {k.decode() for k in books}
    assert not any(x.encode() in v for v in books.values() for x in alice_ids)

    with clickhouse(s) as c:
        text = {tb: rows_text(c, tb) for tb in TABLES}
        cust = dict(c.query("SELECT event_id, customer_id FROM touchpoints FINAL").result_rows)
        nc = c.query("SELECT identifiers, customer_id, consent FROM touchpoints WHERE event_id = 'nc-1'").result_rows
        audit = c.query("SELECT formatRow('JSONEachRow', *) FROM privacy_erasures FINAL").result_rows
        rollup = c.query("SELECT uniqExactMerge(events) FROM rollup_events_hourly").result_rows[0][0]
    for table, rows in text.items():
        for row in rows:
            assert not any(x in row for x in (*GONE, *alice_ids)), (table, row)
            assert BACK not in row or new_profile in row or '"al-9"' in row, (table, row)
    assert {e for e in cust if e.startswith("al-")} == {"al-9"} and cust["al-9"] == new_profile
    assert cust["bo-1"] == cust["bo-2"] == cust["bo-3"] and any("C-BOB-1" in r for r in text["touchpoints"])
    assert any(cust["bo-1"] in r for r in text["sessions"]) and any(cust["bo-1"] in r for r in text["journeys"])
    # without consent: landed, counted, but nobody's and without identifiers
    assert nc == [({k: None for k in nc[0][0]}, NO_CONSENT, False)]
    assert not any("nc-1" in r for r in text["sessions"])
    assert rollup == 11  # rollups count events (erased ones too, the straggler as well): ids, no identifier
    [row] = [json.loads(r[0]) for r in audit]
    assert row["erasure_id"] == erasure_id and row["status"] == "erased"
    assert row["requester"] == "dpo@retailer.example" and row["profiles_removed"] == 2
    assert row["identifiers_removed"] == 5  # login, loyalty card, browser, device, order
    assert int(row["rows_deleted"]["touchpoints"]) == 5 and int(row["rows_deleted"]["negative_moments"]) >= 1
    assert int(row["rows_deleted"]["alerts"]) >= 1 and int(row["rows_deleted"]["identity_merges"]) >= 1
    assert not any(x in audit[0][0] for x in (*GONE, BACK, *alice_ids))
