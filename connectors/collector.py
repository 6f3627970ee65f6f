"""`cem collector`: the HTTP edge for web shops and any system that can POST JSON.

POST /v1/privacy/erase — a customer's erasure request, with its own key (CEM_PRIVACY_API_KEY).
POST /v1/events — body `{"batch": [event, ...]}` (or a bare JSON list), API key in
`Authorization: Bearer <key>` or `X-API-Key`; answers 202 with one result per event
(`accepted` or `rejected` with reason and detail). Limits: body 1 MiB and one event 32 KiB →
413, more than 500 events → 400, each answered with a JSON error naming the field.
GET /healthz, GET /metrics (Prometheus).

Guarantees: keys are compared in constant time; the 202 is sent only after Kafka acknowledged
every accepted event of the request (group commit every few ms across concurrent requests), so
an accepted event is never lost; a rejected event is answered *and* sent to cem.dlq with its
reason, never silently dropped.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web
from confluent_kafka import Producer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from cem.identity import customer_key
from cem.settings import DLQ_TOPIC, RAW_TOPICS, Settings
from cem.schemas.registry import default_registry
from cem.kafka.connection import KafkaConnection
from cem.kafka.dlq import DeadLetters
from cem import metrics
from cem.kafka.admin import partitions_of
from .mapping import to_touchpoint
from .pseudonymize import Pseudonymizer, pseudonymize_subject, redact_pii
from cem.kafka.publisher import BatchPublisher, DeliveryFailed, producer_config

log = logging.getLogger(__name__)
REQUESTS = Counter("cem_collector_requests_total", "Collector HTTP requests", ["path", "status"])
EVENTS = Counter("cem_collector_events_total", "Events received by the collector", ["outcome"])


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": {"field": field, "message": message}}, status=status)


class Collector:
    def __init__(self, settings: Settings, kafka: KafkaConnection, producer: Producer | None = None):
        self.settings = settings
        self._kafka = kafka
        self._keys = [(src, k.get_secret_value().encode()) for src, k in settings.collector_api_keys.items()]
        self._pz = Pseudonymizer(settings.pseudonymization_key.get_secret_value().encode())
        self._producer = producer or Producer(producer_config(kafka))
        w = default_registry().latest("touchpoint")
        self._publisher = BatchPublisher(self._producer, w.parsed,
                                         partitions_of(kafka, list(RAW_TOPICS.values())),
                                         max_events=settings.publisher_max_events,
                                         linger_ms=settings.publisher_linger_ms)
        self._dead = DeadLetters(self._producer, DLQ_TOPIC, "collector", metrics.dead_letter)
        self._waiters: list[asyncio.Future] = []
        self._flusher: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.horizon_ms = settings.accept_horizon_days * 86_400_000
        self.handlers: list[Any] = []  # protocol adapters (Segment, Snowplow) add routes here

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, request: web.Request) -> str | None:
        """The source name whose key the request carries, or None. Constant-time compares."""
        given = request.headers.get("X-API-Key", "")
        auth = request.headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth[7:]
        return self.source_for_key(given)

    def source_for_key(self, given: str) -> str | None:
        """The source whose key is `given` (constant-time over every key), or None."""
        if not given:
            return None
        found = None
        for source, key in self._keys:  # compare with every key: time does not depend on which
            if hmac.compare_digest(given.encode(), key):
                found = source
        return found

    # -- publishing with group commit -------------------------------------------------------
    async def publish_and_wait(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self._publisher.publish(RAW_TOPICS[ev["channel"]], customer_key(ev["identifiers"]).encode(), ev)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        await fut

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.005)  # gather concurrent requests into one flush
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            try:
                # the waiters' events are in the buffers: hand them to the producer on this
                # thread (requests keep publishing on it: buffers are not thread-safe), then wait
                # for Kafka's acks on another so requests are not blocked meanwhile
                self._publisher.send_buffered()
                await loop.run_in_executor(None, self._publisher.wait_acked)
                for f in waiters:
                    if not f.done():
                        f.set_result(None)
            except DeliveryFailed as err:
                for f in waiters:
                    if not f.done():
                        f.set_exception(err)

    def dead_letter(self, raw: bytes, reason: str, detail: str, index: int, source: str) -> None:
        self._dead.send(redact_pii(raw), reason, detail, topic=f"http:{source}", partition=-1, offset=-1,
                        batch_index=index)
        EVENTS.labels("rejected").inc()

    # -- handlers -----------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.Response:
        source = self.authenticate(request)
        if source is None:
            REQUESTS.labels("/v1/events", "401").inc()
            return _error(401, "authorization", "missing or wrong API key; send 'Authorization: Bearer <key>'")
        s = self.settings
        if request.content_length is not None and request.content_length > s.collector_max_body_bytes:
            REQUESTS.labels("/v1/events", "413").inc()
            return _error(413, "body",
                          f"request body is larger than {s.collector_max_body_bytes} bytes; split the batch")
        try:
            body = await request.content.read(s.collector_max_body_bytes + 1)
        except Exception:  # noqa: BLE001 - client went away
            return _error(400, "body", "could not read the request body")
        if len(body) > s.collector_max_body_bytes:
            REQUESTS.labels("/v1/events", "413").inc()
            return _error(413, "body",
                          f"request body is larger than {s.collector_max_body_bytes} bytes; split the batch")
        status, payload = await self.ingest_json(body, source, default_channel="web")
        REQUESTS.labels("/v1/events", str(status)).inc()
        return web.json_response(payload, status=status)

    async def ingest_json(self, body: bytes, source: str, default_channel: str | None) -> tuple[int, dict]:
        """Parse, map, validate, publish one native batch; returns (status, JSON payload)."""
        s = self.settings
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            self.dead_letter(body[:65536], "bad_json", str(err)[:200], -1, source)
            return 400, {"error": {"field": "body", "message": f"body is not valid JSON: {err}"[:300]}}
        batch = doc.get("batch") if isinstance(doc, dict) else doc
        if not isinstance(batch, list):
            return 400, {"error": {"field": "batch", "message": "send {\"batch\": [event, ...]} or a JSON list"}}
        if len(batch) > s.collector_max_batch_events:
            return 400, {"error": {"field": "batch", "message": f"{len(batch)} events; at most "
                                   f"{s.collector_max_batch_events} per request"}}
        raws = [json.dumps(e, separators=(",", ":")).encode() for e in batch]
        for i, raw in enumerate(raws):
            if len(raw) > s.collector_max_event_bytes:
                return 413, {"error": {"field": f"batch[{i}]", "message": f"event is larger than "
                                       f"{s.collector_max_event_bytes} bytes"}}
        return await self.ingest_objects(batch, raws, source, default_channel)

    async def ingest_objects(self, objs: list[Any], raws: list[bytes], source: str,
                             default_channel: str | None) -> tuple[int, dict]:
        now = int(time.time() * 1000)
        results, accepted = [], []
        for i, obj in enumerate(objs):
            res = to_touchpoint(obj, default_channel=default_channel, source=source, now_ms=now,
                                horizon_ms=self.horizon_ms, pseudonymizer=self._pz)
            if isinstance(res, dict):
                accepted.append(res)
                results.append({"index": i, "event_id": res["event_id"], "status": "accepted"})
            else:
                self.dead_letter(raws[i], res.reason, res.detail, i, source)
                results.append({"index": i, "status": "rejected", "reason": res.reason, "detail": res.detail})
        if accepted:
            try:
                await self.publish_and_wait(accepted)
            except DeliveryFailed as err:
                return 503, {"error": {"field": "kafka", "message": f"events not stored, retry later: {err}"}}
            EVENTS.labels("accepted").inc(len(accepted))
        return 202, {"accepted": len(accepted), "rejected": len(objs) - len(accepted), "results": results}

    async def privacy_erase(self, request: web.Request) -> web.Response:
        """POST /v1/privacy/erase {"customer_id": "cus-…" | "kind:value", "requested_by": "…"} (an
        `email:`/`phone:` value is hashed as at the edge):
        authorized by CEM_PRIVACY_API_KEY alone (an event write key is refused); answers 202 with
        the erasure id once Kafka acknowledged the request."""
        from cem.privacy import ErasureRequest
        from cem.kafka.erasure_requests import request_erasure
        key = self.settings.privacy_api_key.get_secret_value().encode()
        auth = request.headers.get("Authorization", "")
        given = auth[7:].encode() if auth.startswith("Bearer ") else request.headers.get("X-API-Key", "").encode()
        if not key or not hmac.compare_digest(given, key):
            REQUESTS.labels("/v1/privacy/erase", "401").inc()
            return _error(401, "authorization", "missing or wrong privacy key; send 'Authorization: Bearer "
                          "<CEM_PRIVACY_API_KEY>' (event write keys are not accepted here; an empty key disables this)")
        try:
            body = json.loads(await request.content.read(4096) or b"{}")
            subject = pseudonymize_subject(str(body.get("customer_id") or ""), self._pz)
            req = ErasureRequest.new(subject, str(body.get("requested_by") or "api"), int(time.time() * 1000))
        except (ValueError, AttributeError) as err:
            REQUESTS.labels("/v1/privacy/erase", "400").inc()
            message = str(err) if isinstance(err, ValueError) and not isinstance(err, json.JSONDecodeError) \
                else "send {\"customer_id\": \"cus-…\" or \"kind:value\"}"
            return _error(400, "customer_id", message)
        try:
            await asyncio.get_running_loop().run_in_executor(None, request_erasure, self._kafka, req)
        except RuntimeError as err:
            REQUESTS.labels("/v1/privacy/erase", "503").inc()
            return _error(503, "kafka", str(err))
        REQUESTS.labels("/v1/privacy/erase", "202").inc()
        return web.json_response({"erasure_id": req.erasure_id, "status": "requested"}, status=202)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.collector_max_body_bytes + 1)
        app.router.add_post("/v1/events", self.events)
        app.router.add_post("/v1/privacy/erase", self.privacy_erase)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        for add_routes in self.handlers:
            add_routes(app)

        async def start(_app: web.Application) -> None:
            self._flusher = asyncio.create_task(self._flush_loop())

        async def stop(_app: web.Application) -> None:
            if self._flusher:
                self._flusher.cancel()
            self._publisher.send_buffered()
            await asyncio.get_running_loop().run_in_executor(None, self._publisher.wait_acked)

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
        return app


def run_collector(settings: Settings, demo_site: bool = False) -> None:
    from .trackers import add_demo_site, add_tracker_routes
    collector = Collector(settings, KafkaConnection.from_settings(settings))
    add_tracker_routes(collector)
    if demo_site:
        add_demo_site(collector)
    web.run_app(collector.app(), host=settings.collector_host, port=settings.collector_port,
                print=lambda *a: log.info(*a))
