"""Issue 7: the collector speaks Segment's HTTP Tracking API and Snowplow's tracker protocol.
The real client libraries (segment-analytics-python, snowplow-tracker) send to a running
`cem collector`; their events must land as the right touchpoints on cem.raw.web. Malformed
payloads get clear errors and DLQ records with their reason, like native ones."""
from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.error
import urllib.request

import pytest
from pydantic import SecretStr

from cem.kafka.connection import KafkaConnection
from cem.connectors.pseudonymize import Pseudonymizer
from tests.support.pipeline import free_port, http_ok, dlq_records, raw_events, start, stop_role, wait_until

KEY = "wk-shop-1"



@pytest.fixture()
def collector(cem_settings):
    port = free_port()
    s = cem_settings.model_copy(update={"collector_port": port, "collector_api_keys": {"web-shop": SecretStr(KEY)}})
    proc = start("collector", s, "collector")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, 0.5, "the collector to listen", (proc,))
    yield s, port
    stop_role(proc)



def landed(s, n: int) -> dict[str, dict]:
    kafka = KafkaConnection.from_settings(s)
    wait_until(lambda: len(raw_events(kafka, "cem.raw.web")) >= n, 60, 0.5, f"{n} events on cem.raw.web")
    return {e["event_id"]: e for e in raw_events(kafka, "cem.raw.web")}


def test_segment_python_client_track_identify_page_alias_batched_and_gzipped(collector):
    from segment.analytics import Client
    s, port = collector
    errors = []
    client = Client(write_key=KEY, host=f"http://127.0.0.1:{port}", gzip=True, upload_size=10,
                    on_error=lambda e, batch: errors.append(e), max_retries=2)
    client.page(anonymous_id="anon-seg-1", name="Lamps", properties={"url": "https://shop.example/lamps"},
                message_id="seg-page-1")
    client.track(anonymous_id="anon-seg-1", event="Products Searched", properties={"query": "lamp"},
                 message_id="seg-search-1")
    client.track(anonymous_id="anon-seg-1", event="Product Added",
                 properties={"product_id": 1234, "price": 19.99, "currency": "EUR"}, message_id="seg-add-1")
    client.identify(user_id="user-42", anonymous_id="anon-seg-1", traits={"email": "Jane.Doe@Example.com"},
                    context={"traits": {"email": "Jane.Doe@Example.com"}, "device": {"id": "dev-9"}},
                    message_id="seg-identify-1")
    client.track(user_id="user-42", event="Order Completed",
                 properties={"order_id": "ord-77", "revenue": 42.5, "currency": "EUR"}, message_id="seg-order-1")
    client.track(user_id="user-42", event="Wishlist Shared", message_id="seg-custom-1")  # unknown: custom
    client.alias(previous_id="anon-seg-old", user_id="user-42", message_id="seg-alias-1")
    client.flush()
    client.join()
    assert not errors, errors
    got = landed(s, 7)
    assert {e["event_type"] for e in got.values()} >= {"page_view", "search", "add_to_cart", "identify",
                                                       "order_placed", "custom"}
    page, search, add = got["seg-page-1"], got["seg-search-1"], got["seg-add-1"]
    assert page["web"]["url"] == "https://shop.example/lamps" and page["identifiers"]["anonymous_id"] == "anon-seg-1"
    assert search["web"]["query"] == "lamp" and search["event_name"] == "track:Products Searched"
    assert add["web"]["product_id"] == "1234" and add["web"]["amount_cents"] == 1999
    ident = got["seg-identify-1"]["identifiers"]
    email_hash = Pseudonymizer(s.pseudonymization_key.get_secret_value().encode()).email_hash("jane.doe@example.com")
    assert ident["customer_id"] == "user-42" and ident["device_id"] == "dev-9" and ident["email_hash"] == email_hash
    order = got["seg-order-1"]
    assert order["identifiers"]["order_id"] == "ord-77" and order["web"]["amount_cents"] == 4250
    assert got["seg-custom-1"]["event_name"] == "track:Wishlist Shared"
    alias = got["seg-alias-1"]["identifiers"]
    assert alias["anonymous_id"] == "anon-seg-old" and alias["customer_id"] == "user-42"
    for e in got.values():
        assert e["source"] == "web-shop" and abs(e["occurred_at"] - time.time() * 1000) < 120_000


def test_segment_clock_skew_is_corrected_from_sent_at(collector):
    s, port = collector
    now = time.time()
    fast = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"  # noqa: E731
    body = {"batch": [{"type": "track", "event": "Product Viewed", "anonymousId": "anon-skew", "messageId": "skew-1",
                       "timestamp": fast(now + 3600 - 30)}],  # device clock 1 h fast, event 30 s before send
            "sentAt": fast(now + 3600)}
    status, _ = post(port, "/v1/batch", json.dumps(body).encode(), basic=KEY)
    assert status == 200
    e = landed(s, 1)["skew-1"]
    assert abs(e["occurred_at"] - (now - 30) * 1000) < 5_000  # receivedAt - (sentAt - timestamp)


def test_snowplow_python_tracker_get_and_post(collector):
    from snowplow_tracker import (Emitter, PageView, SelfDescribing, SelfDescribingJson, StructuredEvent,
                                  Subject, Tracker)
    s, port = collector
    failures = []
    for method in ("get", "post"):
        emitter = Emitter("127.0.0.1", protocol="http", port=port, method=method, batch_size=1,
                          on_failure=lambda n, failed: failures.append((n, failed)))
        subject = Subject().set_domain_user_id(f"duid-{method}").set_user_id(f"sp-user-{method}")
        tracker = Tracker(namespace=f"cem-{method}", emitters=emitter, subject=subject, app_id=KEY,
                          encode_base64=(method == "get"))
        tracker.track(PageView(page_url="https://shop.example/", page_title="Home"))
        tracker.track(StructuredEvent(category="shop", action="add-to-cart", label="#add", property_="sku-1", value=2))
        tracker.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.snowplowanalytics.snowplow/site_search/jsonschema/1-0-0",
            {"terms": ["red", "lamp"], "totalResults": 0})))
        tracker.track(SelfDescribing(SelfDescribingJson("iglu:com.acme/wishlist_add/jsonschema/1-0-0", {"sku": "x"})))
        emitter.flush()
    assert not failures, failures
    got = landed(s, 8)
    by = {(e["identifiers"]["anonymous_id"], e["event_type"], e.get("event_name")): e for e in got.values()}
    for method in ("get", "post"):
        duid = f"duid-{method}"
        pv = by[(duid, "page_view", "page_view")]
        assert pv["web"]["url"] == "https://shop.example/" and pv["identifiers"]["customer_id"] == f"sp-user-{method}"
        cart = by[(duid, "add_to_cart", "se:shop/add-to-cart")]
        assert cart["web"]["element"] == "#add" and cart["web"]["product_id"] == "sku-1"
        search = by[(duid, "search", "iglu:com.snowplowanalytics.snowplow/site_search/jsonschema/1-0-0")]
        assert search["web"]["query"] == "red lamp" and search["web"]["results_count"] == 0
        assert (duid, "custom", "iglu:com.acme/wishlist_add/jsonschema/1-0-0") in by


def post(port: int, path: str, body: bytes, basic: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if basic is not None:
        h["Authorization"] = "Basic " + base64.b64encode(f"{basic}:".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_malformed_segment_and_snowplow_payloads_get_clear_errors_and_dead_letters(collector):
    s, port = collector
    ok = {"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "m-ok"}
    status, body = post(port, "/v1/batch", json.dumps({"batch": [ok]}).encode(), basic="wrong-key")
    assert status == 401 and "write key" in body["error"]["message"]
    status, body = post(port, "/v1/batch", b"{not json", basic=KEY)
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = post(port, "/v1/batch", b"\x1f\x8b garbage", basic=KEY, headers={"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in body["error"]["message"], body
    bomb = gzip.compress(b"[" + b" " * (s.collector_max_body_bytes + 10) + b"]")
    status, body = post(port, "/v1/batch", bomb, basic=KEY, headers={"Content-Encoding": "gzip"})
    assert status == 413
    missing = [{"type": "track", "event": "X", "messageId": "m-noid"},            # no anonymousId/userId
               {"type": "track", "anonymousId": "a2", "messageId": "m-noname"},    # track without event
               {"type": "launch", "anonymousId": "a3", "messageId": "m-type"},     # not a Segment type
               {"type": "page", "anonymousId": "a4", "messageId": "m-big", "properties": {"x": "y" * 40_000}},
               ok]
    status, body = post(port, "/v1/batch", json.dumps({"batch": missing}).encode(), basic=KEY)
    assert status == 200 and body["accepted"] == 1 and body["rejected"] == 4
    reasons = [r.get("reason") for r in body["results"]]
    assert reasons[:4] == ["bad_segment_message:anonymousId", "bad_segment_message:event",
                           "bad_segment_message:type", "bad_segment_message:size"]
    # Snowplow: bad base64, missing ids, wrong app id
    q = "e=ue&eid=sp-bad&duid=d1&aid=" + KEY + "&ue_px=%%%not-base64"
    status, body = get(port, "/i?" + q)
    assert status == 400 and body["results"][0]["reason"] == "bad_snowplow_event:ue_px"
    status, body = get(port, f"/i?e=pv&aid={KEY}&url=x")
    assert status == 400 and body["results"][0]["reason"] == "bad_snowplow_event:eid"
    status, body = get(port, "/i?e=pv&eid=e1&duid=d1&aid=nope")
    assert status == 401 and "app id" in body["error"]["message"]
    status, body = post(port, "/com.snowplowanalytics.snowplow/tp2", json.dumps({"data": "x"}).encode())
    assert status == 400 and "payload_data" in body["error"]["message"]
    # every rejection is in the DLQ with its reason
    wait_until(lambda: len(dlq_records(KafkaConnection.from_settings(s))) >= 7, 60, 0.5, "the dead letters")
    dead = {h.get("cem-reason") for h, _ in dlq_records(KafkaConnection.from_settings(s))}
    assert {"bad_segment_message:anonymousId", "bad_segment_message:event", "bad_segment_message:type",
            "bad_segment_message:size", "bad_snowplow_event:ue_px", "bad_snowplow_event:eid",
            "bad_snowplow_event:data"} <= dead


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            data = r.read()
            return r.status, (json.loads(data) if r.headers.get("Content-Type", "").startswith("application/json")
                              else {"results": [{"status": "accepted"}], "gif": data[:6]})
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
