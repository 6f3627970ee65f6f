"""The HTTP collector against the real broker: auth, limits, per-event results, DLQ, and a
bounded burst of 1,000 concurrent requests on loopback."""
from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from cem.kafka.connection import KafkaConnection
from cem.connectors.collector import Collector
from cem.settings import RAW_TOPICS
from tests.support.pipeline import dlq_records, raw_events

pytestmark = pytest.mark.integration
KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(i: int, **over):
    ev = {"event_id": f"h-{i}", "event_type": "search", "occurred_at": int(time.time() * 1000) - 5000,
          "identifiers": {"anonymous_id": f"anon-{i % 50}", "email": f"user{i}@example.com"},
          "attributes": {"query": "lamp", "results_count": 3}}
    ev.update(over)
    return ev


async def with_collector(settings, scenario):
    collector = Collector(settings, KafkaConnection.from_settings(settings))
    runner = web.AppRunner(collector.app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            return await scenario(http)
    finally:
        await runner.cleanup()


def settings_for(cem_settings):
    return cem_settings.model_copy(update={"collector_api_keys": {"web-shop": SecretStr(KEY)}})


def test_auth_limits_and_per_event_results(cem_settings):
    s = settings_for(cem_settings)
    auth = {"Authorization": f"Bearer {KEY}"}

    async def scenario(http):
        out = {}
        r = await http.post("/v1/events", json={"batch": [event(1)]})
        out["missing"] = (r.status, await r.json())
        r = await http.post("/v1/events", json={"batch": [event(1)]}, headers={"X-API-Key": "wrong"})
        out["wrong"] = r.status
        r = await http.post("/v1/events", data=b"x" * (1024 * 1024 + 10), headers=auth)
        out["body"] = (r.status, await r.json())
        r = await http.post("/v1/events", json={"batch": [event(1, attributes={"query": "x" * 4000,
                                                                              "url": "y" * 4000} | {})] * 1
                                                 + [event(2, location="z" * 40_000)]}, headers=auth)
        out["event"] = (r.status, await r.json())
        r = await http.post("/v1/events", json={"batch": [event(i) for i in range(501)]}, headers=auth)
        out["count"] = (r.status, await r.json())
        r = await http.post("/v1/events", data=b"{not json", headers=auth)
        out["json"] = r.status
        mixed = [event(10), event(11, occurred_at=int(time.time() * 1000) + 48 * 3_600_000),
                 event(12, channel="store", event_type="purchase", identifiers={"loyalty_id": "L1"},
                       attributes={"amount_cents": 999, "currency": "EUR"}),
                 event(13, attributes={"results_count": "many"}), event(14, identifiers={})]
        r = await http.post("/v1/events", json={"batch": mixed}, headers=auth)
        out["mixed"] = (r.status, await r.json())
        r = await http.get("/healthz")
        out["health"] = r.status
        r = await http.get("/metrics")
        out["metrics"] = await r.text()
        return out

    out = asyncio.run(with_collector(s, scenario))
    assert out["missing"][0] == 401 and out["missing"][1]["error"]["field"] == "authorization"
    assert out["wrong"] == 401
    assert out["body"] == (413, {"error": {"field": "body", "message": out["body"][1]["error"]["message"]}})
    assert out["event"][0] == 413 and out["event"][1]["error"]["field"] == "batch[1]"
    assert out["count"][0] == 400 and out["count"][1]["error"]["field"] == "batch"
    assert out["json"] == 400
    status, body = out["mixed"]
    assert status == 202 and (body["accepted"], body["rejected"]) == (2, 3)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted", "rejected", "rejected"]
    assert [r.get("reason") for r in body["results"]] == [None, "future_timestamp", None,
                                                          "bad_type:attributes.results_count", "no_identifier"]
    assert out["health"] == 200 and "cem_collector_requests_total" in out["metrics"]
    web_events = raw_events(KafkaConnection.from_settings(s), RAW_TOPICS["web"])
    store_events = raw_events(KafkaConnection.from_settings(s), RAW_TOPICS["store"])
    assert [e["event_id"] for e in web_events] == ["h-10"] and [e["event_id"] for e in store_events] == ["h-12"]
    assert web_events[0]["identifiers"]["email_hash"] and web_events[0]["source"] == "web-shop"
    reasons = Counter(h["cem-reason"] for h, _ in dlq_records(KafkaConnection.from_settings(s)))
    assert reasons == Counter({"future_timestamp": 1, "bad_type:attributes.results_count": 1, "no_identifier": 1,
                              "bad_json": 1})
    for _, value in dlq_records(KafkaConnection.from_settings(s)):
        assert b"@example.com" not in value


def test_a_burst_of_1000_concurrent_requests_keeps_auth_and_limits(cem_settings):
    s = settings_for(cem_settings)

    async def scenario(http):
        sem = asyncio.Semaphore(200)  # bounded concurrency on loopback

        async def one(i: int):
            async with sem:
                if i % 10 == 0:
                    r = await http.post("/v1/events", json={"batch": [event(i)]}, headers={"X-API-Key": "nope"})
                elif i % 20 == 1:
                    r = await http.post("/v1/events", data=b"[" + b" " * (1024 * 1024 + 1) + b"]",
                                        headers={"X-API-Key": KEY})
                else:
                    r = await http.post("/v1/events", json={"batch": [event(i * 10 + k) for k in range(5)]},
                                        headers={"X-API-Key": KEY})
                await r.read()
                return r.status

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(1000)))
        return Counter(statuses), time.perf_counter() - started

    statuses, seconds = asyncio.run(with_collector(s, scenario))
    assert statuses == Counter({202: 850, 401: 100, 413: 50})
    landed = raw_events(KafkaConnection.from_settings(s), RAW_TOPICS["web"])
    assert len(landed) == len({e["event_id"] for e in landed}) == 850 * 5
    print(f"\ncollector burst: {850 * 5 / seconds:,.0f} accepted events/s, {1000 / seconds:,.0f} requests/s")


def test_erasure_endpoint_takes_its_own_key_only_and_hands_the_request_to_the_coordinator(cem_settings):
    import json

    from cem.settings import IDENTITY_LINKS_TOPIC
    from tests.support.pipeline import read_topic
    s = settings_for(cem_settings).model_copy(update={"privacy_api_key": SecretStr("dpo-key-9")})
    body = {"customer_id": "customer_id:C-42", "requested_by": "dpo"}

    async def scenario(http):
        out = []
        for headers, payload in [({}, body), ({"Authorization": f"Bearer {KEY}"}, body),  # an event write key
                                 ({"Authorization": "Bearer dpo-key-9"}, {"customer_id": "C-42"}),  # not an id
                                 ({"Authorization": "Bearer dpo-key-9"}, body),
                                 ({"Authorization": "Bearer dpo-key-9"}, {"customer_id": "email:Alice@Example.com"})]:
            async with http.post("/v1/privacy/erase", json=payload, headers=headers) as r:
                out.append((r.status, await r.json()))
        return out

    (none, write_key, bad, ok, by_email) = asyncio.run(with_collector(s, scenario))
    assert none[0] == 401 and write_key[0] == 401 and "CEM_PRIVACY_API_KEY" in write_key[1]["error"]["message"]
    assert bad[0] == 400 and "kind:value" in bad[1]["error"]["message"]
    assert ok[0] == 202 and ok[1]["status"] == "requested"
    [req, email] = [json.loads(m.value()) for m in read_topic(KafkaConnection.from_settings(s), IDENTITY_LINKS_TOPIC)]
    assert req["control"] == "erase" and req["request"]["erasure_id"] == ok[1]["erasure_id"]
    assert req["request"]["subject"] == "customer_id:C-42" and req["request"]["requester"] == "dpo"
    from cem.connectors.pseudonymize import Pseudonymizer
    hashed = Pseudonymizer(s.pseudonymization_key.get_secret_value().encode()).email_hash("alice@example.com")
    assert by_email[0] == 202 and email["request"]["subject"] == f"email_hash:{hashed}"  # the raw email never travels


def test_without_consent_the_collector_withholds_identifiers_at_the_edge(cem_settings):
    s = settings_for(cem_settings)

    async def scenario(http):
        async with http.post("/v1/events", json={"batch": [event(1, consent=False), event(2)]},
                             headers={"Authorization": f"Bearer {KEY}"}) as r:
            return r.status, await r.json()

    status, payload = asyncio.run(with_collector(s, scenario))
    assert status == 202 and payload["accepted"] == 2
    got = {e["event_id"]: e for e in raw_events(KafkaConnection.from_settings(s), RAW_TOPICS["web"])}
    assert got["h-1"]["consent"] is False and not any(got["h-1"]["identifiers"].values())
    assert got["h-2"]["consent"] is None and got["h-2"]["identifiers"]["anonymous_id"] == "anon-2"
