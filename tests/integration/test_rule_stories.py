"""Every default rule on the real pipeline (broker + worker + sink + chdb): its story fires it, a
near-miss next to it stays silent. Each story is its own customer; event time lies days back so
the absence timers (30 min, 5 days) run out once the sources go quiet and event time follows the
wall clock."""
from __future__ import annotations

import time

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import publish_events
from cem.kafka.admin import partitions_of
from cem.rules import load_rules
from cem.schemas.registry import default_registry
from cem.settings import RAW_TOPICS
from tests.support.ch import clickhouse
from tests.support.pipeline import start, stop_role, wait_caught_up

pytestmark = pytest.mark.integration
S, MIN, H, DAY = 1000, 60_000, 3_600_000, 86_400_000


class Story:
    """Events of one customer; ids and identifiers are prefixed with the story's name."""

    def __init__(self, name: str, t0: int):
        self.name, self.t0, self.events = name, t0, []

    def ev(self, channel: str, etype: str, dt: int, **attrs) -> "Story":
        n = self.name
        ids = {"web": {"anonymous_id": f"{n}-anon"}, "store": {"loyalty_id": f"{n}-card"},
               "phone": {"phone_hash": f"{n}-ph"}, "returns": {"order_id": f"{n}-order"},
               "feedback": {"email_hash": f"{n}-mail"}}[channel]
        ids.update(attrs.pop("ids", {}))
        self.events.append({"event_id": f"{n}-{len(self.events)}", "event_type": etype, "channel": channel,
                            "occurred_at": self.t0 + dt, "received_at": self.t0 + dt, "source": "story",
                            "identifiers": ids, "store_id": "store-07" if channel == "store" else None,
                            channel: attrs})
        return self


def stories(t0: int) -> dict[str, tuple[Story, Story]]:
    def pair(rule: str) -> tuple[Story, Story]:
        return Story(f"fire-{rule}", t0), Story(f"near-{rule}", t0)

    out = {}
    f, n = out["payment_failed"] = pair("payment_failed")
    f.ev("web", "checkout_started", 0).ev("web", "payment_failed", MIN, error_code="card_declined")
    n.ev("web", "checkout_started", 0).ev("web", "order_placed", MIN, amount_cents=1000, currency="EUR")
    f, n = out["rage_click"] = pair("rage_click")
    for i in range(3):
        f.ev("web", "click", i * 300, element="#pay")
        n.ev("web", "click", i * 1500, element="#pay")       # three clicks, but over 3 s
    f, n = out["zero_result_searches"] = pair("zero_result_searches")
    f.ev("web", "search", 0, query="xqzzt", results_count=0).ev("web", "search", MIN, query="xqzt", results_count=0)
    n.ev("web", "search", 0, query="xqzzt", results_count=0).ev("web", "search", MIN, query="lamp", results_count=5)
    f, n = out["checkout_abandoned"] = pair("checkout_abandoned")
    f.ev("web", "checkout_started", 0)
    n.ev("web", "checkout_started", 0).ev("web", "order_placed", 10 * MIN, amount_cents=1000, currency="EUR")
    f, n = out["item_unavailable"] = pair("item_unavailable")
    f.ev("store", "visit_started", 0).ev("store", "item_unavailable", MIN, product_id="sku-9")
    n.ev("store", "visit_started", 0).ev("store", "purchase", MIN, product_id="sku-9", amount_cents=900, currency="EUR")
    f, n = out["long_queue"] = pair("long_queue")
    f.ev("store", "queue_wait", 0, wait_seconds=900)
    n.ev("store", "queue_wait", 0, wait_seconds=300)
    f, n = out["long_hold"] = pair("long_hold")
    f.ev("phone", "call_started", 0, call_id="f-lh").ev("phone", "hold", MIN, call_id="f-lh", hold_seconds=400)
    n.ev("phone", "call_started", 0, call_id="n-lh").ev("phone", "hold", MIN, call_id="n-lh", hold_seconds=200)
    f, n = out["multiple_transfers"] = pair("multiple_transfers")
    f.ev("phone", "call_started", 0, call_id="f-mt").ev("phone", "transfer", MIN, call_id="f-mt") \
        .ev("phone", "transfer", 2 * MIN, call_id="f-mt")
    n.ev("phone", "call_started", 0, call_id="n-mt").ev("phone", "transfer", MIN, call_id="n-mt")
    f, n = out["abandoned_call"] = pair("abandoned_call")
    f.ev("phone", "call_started", 0, call_id="f-ac").ev("phone", "call_ended", MIN, call_id="f-ac", reason="abandoned")
    n.ev("phone", "call_started", 0, call_id="n-ac").ev("phone", "call_ended", MIN, call_id="n-ac",
                                                        reason="order_status", resolved=True)
    f, n = out["repeat_contact"] = pair("repeat_contact")
    f.ev("phone", "call_started", 0, call_id="f-rc1", ids={"order_id": "O-rc-f"}) \
        .ev("phone", "call_started", 2 * DAY, call_id="f-rc2", ids={"order_id": "O-rc-f"})
    n.ev("phone", "call_started", 0, call_id="n-rc1", ids={"order_id": "O-rc-n"}) \
        .ev("phone", "call_started", 8 * DAY, call_id="n-rc2", ids={"order_id": "O-rc-n"})  # a week later
    f, n = out["wrong_item_return"] = pair("wrong_item_return")
    f.ev("returns", "return_requested", 0, rma_id="f-rma1", reason="wrong_item")
    n.ev("returns", "return_requested", 0, rma_id="n-rma1", reason="size")
    f, n = out["no_refund"] = pair("no_refund")
    f.ev("returns", "return_received", 0, rma_id="f-rma2", reason="size")
    n.ev("returns", "return_received", 0, rma_id="n-rma2", reason="size") \
        .ev("returns", "refund_issued", 2 * DAY, rma_id="n-rma2", amount_cents=1000, currency="EUR")
    f, n = out["detractor_nps"] = pair("detractor_nps")
    f.ev("feedback", "survey_response", 0, survey_id="s", nps=3, csat=3)
    n.ev("feedback", "survey_response", 0, survey_id="s", nps=7, csat=3)
    f, n = out["low_csat"] = pair("low_csat")
    f.ev("feedback", "survey_response", 0, survey_id="s", nps=8, csat=1)
    n.ev("feedback", "survey_response", 0, survey_id="s", nps=8, csat=3)
    f, n = out["search_unavailable_call"] = pair("search_unavailable_call")
    for s, call_at in ((f, 20 * H), (n, 25 * H)):  # the call inside / outside the 24 h
        link = {"customer_id": f"{s.name}-C", "loyalty_id": f"{s.name}-card", "phone_hash": f"{s.name}-ph"}
        s.ev("web", "identify", 0, ids=link).ev("web", "search", MIN, query="garden chair", results_count=3) \
            .ev("store", "item_unavailable", 3 * H, product_id="sku-7").ev("phone", "call_started", call_at,
                                                                          call_id=f"{s.name}-call")
    return out


def test_every_default_rule_fires_on_its_story_and_not_on_the_near_miss(cem_settings):
    s = cem_settings.model_copy(update={"idle_timeout_seconds": 3.0, "tick_seconds": 1.0})
    kafka = KafkaConnection.from_settings(s)
    t0 = int(time.time() * 1000) - 12 * DAY
    catalogue = stories(t0)
    assert set(catalogue) == {r.name for r in load_rules(None)}  # a new default rule needs a story here
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    worker, sink = start("worker", s), start("sink", s)
    try:
        publish_events(kafka, [e for f, n in catalogue.values() for e in f.events + n.events],
                       default_registry(), parts)
        wait_caught_up(s, (worker, sink))
        time.sleep(s.idle_timeout_seconds + 4 * s.tick_seconds)  # quiet: timers run out on the wall clock
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        moments = c.query("SELECT rule, evidence FROM negative_moments FINAL").result_rows
    story_of = {e["event_id"]: st.name for f, n in catalogue.values() for st in (f, n) for e in st.events}
    fired = {(rule, story_of[evidence[0]]) for rule, evidence in moments}
    for rule in catalogue:
        assert (rule, f"fire-{rule}") in fired, f"{rule} did not fire on its story"
        assert (rule, f"near-{rule}") not in fired, f"{rule} fired on its near-miss"
