"""Identity on the real pipeline: a loyalty scan in store and a later login carrying that card
merge two profiles (recorded in identity_merges); `cem identity unmerge` reverses it going forward."""
from __future__ import annotations

import json
import time

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import publish_events
from cem.kafka.admin import partitions_of
from cem.schemas.registry import default_registry
from cem.settings import IDENTITY_MERGES_TOPIC, RAW_TOPICS
from cem.streams.identity_log import find_merge, request_unmerge
from tests.support.ch import clickhouse
from tests.support.pipeline import read_topic, start, stop_role, wait_caught_up, wait_until

pytestmark = pytest.mark.integration


def ev(eid, channel, etype, at, **ids):
    return {"event_id": eid, "event_type": etype, "channel": channel, "occurred_at": at, "received_at": at,
            "source": "story", "identifiers": ids, channel: {}}


def merges(s):
    return [json.loads(m.value()) for m in read_topic(KafkaConnection.from_settings(s), IDENTITY_MERGES_TOPIC)]


def test_loyalty_scan_then_login_merges_and_unmerge_reverses(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    now = int(time.time() * 1000) - 3_600_000
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    reg = default_registry()
    worker, sink = start("worker", s), start("sink", s)
    try:
        publish_events(kafka, [ev("st-1", "store", "loyalty_scan", now, loyalty_id="L-77")], reg, parts)
        wait_caught_up(s, (worker, sink))
        publish_events(kafka, [ev("w-1", "web", "page_view", now + 60_000, anonymous_id="a-77",
                                               customer_id="C-77")], reg, parts)
        wait_caught_up(s, (worker, sink))
        publish_events(kafka, [ev("w-2", "web", "login", now + 120_000, anonymous_id="a-77",
                                               customer_id="C-77", loyalty_id="L-77")], reg, parts)
        wait_until(lambda: any(m["status"] == "merged" for m in merges(s)), 60, what="the merge", procs=(worker,))
        [merge] = [m for m in merges(s) if m["status"] == "merged"]
        assert set(merge["moved"]) == {"anonymous_id:a-77", "customer_id:C-77"}  # web profile into the older store one
        assert find_merge(kafka, merge["merge_id"])["winner"] == merge["winner"]
        request_unmerge(kafka, merge)
        wait_until(lambda: any(m["status"] == "unmerged" for m in merges(s)), 60, what="the unmerge", procs=(worker,))
        publish_events(kafka, [ev("w-3", "web", "page_view", now + 180_000, anonymous_id="a-77",
                                               customer_id="C-77")], reg, parts)
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        cust = dict(c.query("SELECT event_id, customer_id FROM touchpoints FINAL").result_rows)
        rows = c.query("SELECT status FROM identity_merges FINAL WHERE merge_id = %(m)s",
                       parameters={"m": merge["merge_id"]}).result_rows
    assert cust["w-2"] == cust["st-1"] == merge["winner"]    # merged: the login joined the store customer
    assert cust["w-3"] == merge["loser"] != merge["winner"]  # after the unmerge: back to the web profile
    assert rows == [("unmerged",)]
