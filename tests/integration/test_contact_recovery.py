"""Contact on every channel and recovery playbooks on the real pipeline (broker + worker + sink
+ notify + chdb): a call, a web contact form and a service-desk visit about one order make one
repeat-contact moment with all three as evidence; with no resolution it closes unrecovered and
its alert (carrying the playbook's action) escalates exactly once, in ClickHouse and in the
webhooks. The recovery_by_action pack query is checked against rows of known answer."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cem.connectors.generate import publish_events
from cem.kafka.admin import partitions_of
from cem.kafka.connection import KafkaConnection
from cem.schemas.registry import default_registry
from cem.settings import RAW_TOPICS
from cem.sinks.queries import get, run
from tests.support.ch import clickhouse
from tests.support.pipeline import start, stop_role, wait_caught_up, wait_until

pytestmark = pytest.mark.integration
MIN, H, DAY = 60_000, 3_600_000, 86_400_000
ALERT_COLUMNS = ("alert_id", "rule", "action", "value_band", "escalated", "severity", "team", "revision", "status")


class Hooks:
    """Accepts every webhook and keeps its JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"


def ev(eid: str, channel: str, etype: str, at: int, ids: dict, attrs: dict | None = None,
       contact: dict | None = None, store: str | None = None) -> dict:
    return {"event_id": eid, "event_type": etype, "channel": channel, "occurred_at": at, "received_at": at,
            "source": "story", "identifiers": ids, "store_id": store, channel: attrs or {}, "contact": contact}


def stories(t0: int) -> list[dict]:
    multi = {"customer_id": "C-multi", "order_id": "O-1"}
    fixed = {"customer_id": "C-fixed", "order_id": "O-2"}
    return [
        # a call, then a web contact form, then a service-desk visit about one order; nobody solves it
        ev("multi-call", "phone", "call_started", t0, {**multi, "phone_hash": "ph-multi"}, {"call_id": "k1"},
           {"topic": "delivery"}),
        ev("multi-call-end", "phone", "call_ended", t0 + 10 * MIN, {**multi, "phone_hash": "ph-multi"},
           {"call_id": "k1", "resolved": False}),
        ev("multi-form", "web", "contact_form_submitted", t0 + DAY, {**multi, "anonymous_id": "an-multi"}, {},
           {"topic": "where is my parcel", "case_id": "case-1"}),
        ev("multi-desk", "store", "service_desk_visit", t0 + 2 * DAY, {**multi, "loyalty_id": "L-multi"}, {},
           {"case_id": "case-2", "resolved": False}, "store-07"),
        # a chat and an email about another order; the email reply solves it
        ev("fixed-chat", "web", "chat_started", t0, {**fixed, "anonymous_id": "an-fixed"}, {}, {"case_id": "case-3"}),
        ev("fixed-mail", "email", "email_received", t0 + DAY, {**fixed, "email_hash": "em-fixed"},
           {"thread_id": "th-4"}, {"case_id": "case-4"}),
        ev("fixed-reply", "email", "email_sent", t0 + DAY + 2 * H, {**fixed, "email_hash": "em-fixed"},
           {"thread_id": "th-4"}, {"case_id": "case-4", "resolved": True}),
        # a big spender and a first-time visitor meet an unavailable item in store
        ev("vip-buy", "store", "purchase", t0 - 5 * DAY, {"loyalty_id": "L-vip"},
           {"amount_cents": 650_000, "currency": "EUR"}, None, "store-07"),
        ev("vip-miss", "store", "item_unavailable", t0, {"loyalty_id": "L-vip"}, {"product_id": "sku-1"}, None,
           "store-07"),
        ev("new-miss", "store", "item_unavailable", t0, {"loyalty_id": "L-new"}, {"product_id": "sku-1"}, None,
           "store-07"),
    ]


def test_contacts_on_every_channel_make_one_moment_and_its_alert_escalates_once(cem_settings):
    s = cem_settings.model_copy(update={"idle_timeout_seconds": 3.0, "tick_seconds": 1.0})
    hooks = Hooks()
    t0 = int(time.time() * 1000) - 12 * DAY
    kafka = KafkaConnection.from_settings(s)
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    env = {"CEM_WEBHOOK_ENDPOINTS": json.dumps({"*": hooks.url}), "CEM_WEBHOOK_SECRET": "s3cret"}
    worker, sink, notify = start("worker", s), start("sink", s), start("notify", s, "notify", **env)
    try:
        publish_events(kafka, stories(t0), default_registry(), parts)
        wait_caught_up(s, (worker, sink))
        time.sleep(s.idle_timeout_seconds + 4 * s.tick_seconds)  # quiet: the recovery windows close
        wait_caught_up(s, (worker, sink))
        wait_until(lambda: any(b["type"] == "alert.escalated" for b in hooks.bodies), 60, 0.2,
                   "the escalation webhook", (worker, notify))
        time.sleep(2)  # a second escalation, were there one, would arrive now
    finally:
        stop_role(notify), stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        moments = c.query("SELECT customer_id, evidence, recovery_status FROM negative_moments FINAL "
                          "WHERE rule = 'repeat_contact' ORDER BY occurred_at").result_rows
        # alert columns by the story of its moment's first evidence event ("multi-call" -> "multi")
        alerts = {m_ev[0].split("-")[0]: dict(zip(ALERT_COLUMNS, rest, strict=True)) for m_ev, *rest in c.query(
            f"SELECT m.evidence, {', '.join('a.' + x for x in ALERT_COLUMNS)} FROM alerts AS a FINAL "
            "JOIN negative_moments AS m FINAL ON m.moment_id = a.moment_id").result_rows}
        q = get("contact_resolution")
        cols, rows = run(c, q, q.bind({}))
        contacts = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
    # one repeat-contact moment per story, all contacts as evidence, in event-time order
    assert sorted((ev_, st) for _, ev_, st in moments) == [
        (["fixed-chat", "fixed-mail"], "recovered"), (["multi-call", "multi-form", "multi-desk"], "unrecovered")]
    multi, fixed, vip, new = alerts["multi"], alerts["fixed"], alerts["vip"], alerts["new"]
    assert multi["rule"] == "repeat_contact" and multi["action"] == "callback"
    assert (multi["escalated"], multi["severity"], multi["team"], multi["revision"], multi["status"]) == \
        (1, "critical", "cx-escalations", 2, "open")
    assert (fixed["action"], fixed["escalated"], fixed["status"]) == ("callback", 0, "resolved")
    assert (vip["rule"], vip["action"], vip["value_band"]) == ("item_unavailable", "escalate_store_manager", "vip")
    assert vip["team"] == "store-managers"  # the playbook's own escalation route
    assert (new["action"], new["value_band"]) == ("voucher", "none")
    multi_id = multi["alert_id"]
    # the webhooks carry the action; the escalation went out exactly once
    types = Counter((b["alert"]["alert_id"], b["type"]) for b in hooks.bodies)
    assert types[(multi_id, "alert.open")] == 1
    # every escalated alert (the two unrecovered store moments too) went out escalated exactly once
    assert {a["alert_id"] for a in alerts.values() if a["escalated"]} == {multi_id, vip["alert_id"], new["alert_id"]}
    assert {k: n for k, n in types.items() if k[1] == "alert.escalated"} == \
        {(a["alert_id"], "alert.escalated"): 1 for a in alerts.values() if a["escalated"]}
    escalation = next(b for b in hooks.bodies if b["type"] == "alert.escalated" and b["alert"]["alert_id"] == multi_id)
    assert escalation["alert"]["action"] == "callback" and escalation["alert"]["severity"] == "critical"
    assert all(b["alert"].get("action") for b in hooks.bodies)
    # first-contact resolution counts every channel's contacts
    assert {"phone", "email", "store"} <= set(contacts)
    assert contacts["email"]["resolved_on_contact"] == 1 and contacts["store"]["resolved_on_contact"] == 0
def test_recovery_by_action_against_rows_of_known_answer(tmp_path):
    from cem.sinks.clickhouse.client import connect
    from cem.sinks.clickhouse.migrations import apply

    c = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        apply(c)
        day = 86_400
        t0 = 1_790_000_000
        # (alert, customer, moment at, action, recovery, escalated, bought again after N days)
        known = [("a1", "c1", t0, "callback", "recovered", 0, 3), ("a2", "c2", t0, "callback", "recovered", 0, None),
                 ("a3", "c3", t0, "callback", "unrecovered", 1, 40), ("a4", "c4", t0, "voucher", "recovered", 0, 1),
                 ("a5", "c5", t0, "voucher", "open", 0, 2), ("a6", "c6", t0, "", "recovered", 0, 1)]
        c.insert("negative_moments", [[f"m-{a}", "r", "count", "high", "t", cust, "phone", None, [],
                                       _dt(at), _dt(at), rec, None, _dt(at + 7 * day), 1]
                                      for a, cust, at, _, rec, _, _ in known],
                 column_names=["moment_id", "rule", "kind", "severity", "team", "customer_id", "channel", "store_id",
                               "evidence", "occurred_at", "detected_at", "recovery_status", "recovered_by",
                               "recovery_deadline", "version"])
        c.insert("alerts", [[a, f"m-{a}", "r", "t", "high", cust, "phone", None, "open", rec, [], _dt(at), 1,
                             action, esc] for a, cust, at, action, rec, esc, _ in known],
                 column_names=["alert_id", "moment_id", "rule", "team", "severity", "customer_id", "channel",
                               "store_id", "status", "recovery_status", "delivery", "created_at", "version", "action",
                               "escalated"])
        buys = [(cust, at + d * day) for _, cust, at, _, _, _, d in known if d is not None]
        c.command("INSERT INTO touchpoints (event_id, event_type, channel, occurred_at, received_at, source, cem) "
                  "VALUES " + ", ".join(f"('b{i}', 'purchase', 'store', toDateTime64({at}, 3), toDateTime64({at}, 3), "
                                        f"'t', tuple('{cust}', false, 0))" for i, (cust, at) in enumerate(buys)))
        q = get("recovery_by_action")
        cols, rows = run(c, q, q.bind({}))
        got = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
    finally:
        c.close()
    assert set(got) == {"callback", "voucher"}  # alerts without an action (older rows) are left out
    cb, v = got["callback"], got["voucher"]
    assert (cb["alerts"], cb["recovered"], cb["unrecovered"], cb["escalated"]) == (3, 2, 1, 1)
    assert cb["recovery_rate"] == pytest.approx(0.667) and cb["repurchase_rate"] == pytest.approx(0.333)
    assert (v["alerts"], v["recovered"], v["unrecovered"]) == (2, 1, 0)
    assert (v["recovery_rate"], v["repurchase_rate"]) == (1.0, 1.0)


def _dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)
