"""Segment and Snowplow endpoints on the collector: existing trackers point at cem unchanged.

Segment HTTP Tracking API: `POST /v1/batch` (`{"batch": [message, …], "sentAt": …}`) and
`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/alias`, `/v1/group` (one message).
The write key is the Basic-auth user name (`Authorization: Basic base64(key:)`) or, as
analytics.js sends it from browsers, `writeKey` in the body. Bodies may be gzip-compressed
(`Content-Encoding: gzip`). Answers 200 `{"success": true, …}` once Kafka acknowledged the
accepted messages (per-message results beside it); 400/401/413 with a JSON error otherwise.

Snowplow tracker protocol: `GET /i` (and `/com.snowplowanalytics.snowplow/i`) with the event
in the query string, answered with the 1×1 GIF trackers expect; `POST
/com.snowplowanalytics.snowplow/tp2` with a payload_data body, answered 200. The app id (`aid`)
is the write key, as Snowplow has no other credential on the wire.

Both go through the native collector's key check (constant time), body and event limits,
mapping, validation, pseudonymization (emails hashed at the edge), DLQ-with-reason and metrics.
A message that is not Segment's or Snowplow's spec is dead-lettered with reason
`bad_segment_message:<field>` / `bad_snowplow_event:<field>` and answered, never dropped.
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from . import segment, snowplow
from .collector import REQUESTS, Collector

SEGMENT_CALLS = ("track", "identify", "page", "screen", "alias", "group")
#: analytics.js (browser) posts to /v1/<first letter of the call>; /v1/b is its batch.
SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "a": "alias", "g": "group", "b": "batch"}
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"success": False, "error": {"field": field, "message": message}}, status=status)


async def _body(collector: Collector, request: web.Request, path: str) -> bytes | web.Response:
    """The request body within the collector's size limit. aiohttp gunzips `Content-Encoding:
    gzip` bodies as they stream in, so the limit applies to the decompressed size (a gzip bomb
    stops there) and a body that is not gzip fails here with a 400."""
    limit = collector.settings.collector_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        REQUESTS.labels(path, "413").inc()
        return _error(413, "body", f"request body is larger than {limit} bytes; send smaller batches")
    try:
        raw = await request.content.read(limit + 1)
    except Exception as err:  # noqa: BLE001 - aiohttp's decoding errors, a client gone away
        REQUESTS.labels(path, "400").inc()
        encoding = request.headers.get("Content-Encoding")
        return _error(400, "body", f"could not read the body{f' as {encoding}' if encoding else ''}: {str(err)[:200]}")
    if len(raw) > limit:
        REQUESTS.labels(path, "413").inc()
        return _error(413, "body", f"request body is larger than {limit} bytes (decompressed); send smaller batches")
    return raw


def _basic_user(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return ""
    try:
        return base64.b64decode(auth[6:], validate=True).decode().split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _map_each(items: list[Any], to_native: Any,
              refusal: type[segment.SegmentError] | type[snowplow.SnowplowError], max_bytes: int
              ) -> tuple[list[tuple[int, Any, bytes]], list[tuple[int, str, str, bytes]]]:
    """Each protocol message → (index, native object, its JSON bytes), or a refusal
    (index, field, message, bytes) when it is too large or not the protocol's spec."""
    natives, errors = [], []
    for i, item in enumerate(items):
        one = json.dumps(item, separators=(",", ":")).encode()
        if len(one) > max_bytes:
            errors.append((i, "size", f"message is larger than {max_bytes} bytes", one[:65536]))
            continue
        try:
            natives.append((i, to_native(item), one))
        except refusal as err:
            errors.append((i, err.field, str(err), one))
    return natives, errors


async def _ingest(collector: Collector, natives: list[tuple[int, Any, bytes]],
                  errors: list[tuple[int, str, str, bytes]], source: str, kind: str) -> tuple[int, dict]:
    """Dead-letter the protocol errors, then map/validate/publish the rest like native events."""
    results: list[dict] = []
    for index, field, message, raw in errors:
        collector.dead_letter(raw, f"bad_{kind}:{field}", message, index, source)
        results.append({"index": index, "status": "rejected", "reason": f"bad_{kind}:{field}", "detail": message})
    status = 202
    payload: dict[str, Any] = {"accepted": 0, "rejected": 0, "results": []}
    if natives:
        status, payload = await collector.ingest_objects([n for _, n, _ in natives], [r for _, _, r in natives],
                                                         source, "web")
        if status != 202:
            return status, payload
        for r in payload["results"]:
            r["index"] = natives[r["index"]][0]
    results = sorted(results + payload["results"], key=lambda r: r["index"])
    accepted = sum(1 for r in results if r["status"] == "accepted")
    return 200, {"success": True, "accepted": accepted, "rejected": len(results) - accepted, "results": results}


def add_tracker_routes(collector: Collector) -> None:
    s = collector.settings

    async def segment_call(request: web.Request) -> web.Response:
        path = request.path  # /v1/<call>, or analytics.js's short form /v1/t, /v1/p, … /v1/b
        raw = await _body(collector, request, path)
        if isinstance(raw, web.Response):
            return raw
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            collector.dead_letter(raw[:65536], "bad_json", str(err)[:200], -1, "segment")
            REQUESTS.labels(path, "400").inc()
            return _error(400, "body", f"body is not valid JSON: {err}"[:300])
        if not isinstance(doc, dict):
            REQUESTS.labels(path, "400").inc()
            return _error(400, "body", "a Segment body must be a JSON object")
        key = _basic_user(request) or str(doc.get("writeKey") or "")
        source = collector.source_for_key(key)
        if source is None:
            REQUESTS.labels(path, "401").inc()
            return _error(401, "writeKey", "missing or wrong write key; send it as the Basic-auth user name")
        call = path.rsplit("/", 1)[-1]
        call = SHORT.get(call, call)
        if call == "batch":
            messages, sent_at = doc.get("batch"), doc.get("sentAt")
            if not isinstance(messages, list):
                REQUESTS.labels(path, "400").inc()
                return _error(400, "batch", "send {\"batch\": [message, …]}")
        else:
            messages, sent_at = [{**doc, "type": call}], None
        if len(messages) > s.collector_max_batch_events:
            REQUESTS.labels(path, "400").inc()
            return _error(400, "batch", f"{len(messages)} messages; at most {s.collector_max_batch_events} per request")
        now = int(time.time() * 1000)
        natives, errors = _map_each(messages, lambda m: segment.to_native(m, now, sent_at), segment.SegmentError,
                                    s.collector_max_event_bytes)
        status, payload = await _ingest(collector, natives, errors, source, "segment_message")
        REQUESTS.labels(path, str(status)).inc()
        return web.json_response(payload, status=status)

    async def snowplow_events(request: web.Request, events: list[Any], path: str) -> tuple[int, dict]:
        if len(events) > s.collector_max_batch_events:
            return 400, {"error": {"field": "data", "message": f"{len(events)} events; at most "
                                   f"{s.collector_max_batch_events} per request"}}
        keys = {str(e.get("aid") or "") for e in events if isinstance(e, dict)}
        sources = {collector.source_for_key(k) for k in keys} if keys else {None}
        source = sources.pop() if len(sources) == 1 else None
        if source is None:
            return 401, {"error": {"field": "aid", "message": "missing or wrong app id; set the tracker's "
                                   "app id (aid) to the write key cem gave you"}}
        now = int(time.time() * 1000)
        natives, errors = _map_each(events, lambda e: snowplow.to_native(e, now), snowplow.SnowplowError,
                                    s.collector_max_event_bytes)
        return await _ingest(collector, natives, errors, source, "snowplow_event")

    async def snowplow_get(request: web.Request) -> web.Response:
        status, payload = await snowplow_events(request, [dict(request.query)], "/i")
        if status == 200 and payload["rejected"]:
            status = 400  # one event per GET: say why it was refused (it is dead-lettered too)
        REQUESTS.labels("/i", str(status)).inc()
        if status != 200:
            return web.json_response(payload, status=status)
        return web.Response(body=GIF, content_type="image/gif", headers={"Cache-Control": "no-cache, no-store"})

    async def snowplow_post(request: web.Request) -> web.Response:
        path = "/com.snowplowanalytics.snowplow/tp2"
        raw = await _body(collector, request, path)
        if isinstance(raw, web.Response):
            return raw
        try:
            events = snowplow.payload_events(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            field = getattr(err, "field", "body")
            collector.dead_letter(raw[:65536], f"bad_snowplow_event:{field}", str(err)[:300], -1, "snowplow")
            REQUESTS.labels(path, "400").inc()
            return _error(400, field, str(err)[:300])
        status, payload = await snowplow_events(request, events, path)
        REQUESTS.labels(path, str(status)).inc()
        return web.json_response(payload, status=status)

    def routes(app: web.Application) -> None:
        app.router.add_post("/v1/batch", segment_call)
        for call in (*SEGMENT_CALLS, *SHORT):
            app.router.add_post(f"/v1/{call}", segment_call)
        app.router.add_get("/i", snowplow_get)
        app.router.add_get("/com.snowplowanalytics.snowplow/i", snowplow_get)
        app.router.add_post("/com.snowplowanalytics.snowplow/tp2", snowplow_post)

    collector.handlers.append(routes)


DEMO_SITE = Path(__file__).resolve().parent / "demo_site"
#: Where `make install` puts the npm package (@segment/analytics-next's browser build).
ANALYTICS_JS = Path(".cache/web/node_modules/@segment/analytics-next/dist/umd")


def add_demo_site(collector: Collector, analytics_js: Path = ANALYTICS_JS) -> None:
    """Serve the demo shop at /demo/ (index.html, shop.js) and analytics.js at /demo/ajs/."""
    if not (analytics_js / "index.js").is_file():
        raise FileNotFoundError(f"analytics.js not found in {analytics_js}; run `make install` "
                                "(npm install @segment/analytics-next into .cache/web)")

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(DEMO_SITE / "index.html")

    def routes(app: web.Application) -> None:
        app.router.add_static("/demo/ajs/", analytics_js)
        app.router.add_get("/demo/", index)
        app.router.add_static("/demo/", DEMO_SITE)

    collector.handlers.append(routes)
