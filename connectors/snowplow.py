"""Snowplow tracker protocol payloads → cem's native event objects (pure; no I/O).

`GET /i?e=pv&eid=…` carries one event in the query string; `POST /com.snowplowanalytics.
snowplow/tp2` carries `{"schema": "iglu:…/payload_data/…", "data": [event, …]}` with every
value a string. `connectors/trackers.py` serves both and passes each event here.

Mapping (README "Drop-in for Segment and Snowplow"):
- `eid` is the event_id; `duid` (domain user id) → anonymous_id, `uid` → customer_id, `nuid`
  (network user id) → device_id, `tr_id` → order_id.
- `e=pv` → page_view (`url`, `refr`); `e=pp` (page ping) → custom; `e=tr` (transaction) →
  order_placed (`tr_tt` → amount); `e=se` structured events → by action (`SE_ACTIONS`), else
  custom, with `se_la` as the element and `se_pr` as the product (for a contact action —
  contact_form_submitted, chat_started, chat_ended — `se_la` is the contact's topic and `se_pr`
  the order it is about); `e=ue` self-describing events
  (`ue_pr` JSON or `ue_px` base64url JSON) → by the event schema's name (`UE_EVENTS`), else
  custom. The sender's name (`se:<category>/<action>` or the event's Iglu schema) is kept in
  `event_name`. Contexts (`co` / `cx`) are checked for well-formedness only.
- Event time, as Snowplow derives it: `ttm` (true timestamp) if sent; else
  `received - (stm - dtm)` (device clock skew removed) when both are sent; else `dtm`; else the
  receive time.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

from cem.events import CONTACTS

from .mapping import parse_time

SE_ACTIONS: Mapping[str, str] = {
    "search": "search", "add-to-cart": "add_to_cart", "add_to_cart": "add_to_cart",
    "checkout": "checkout_started", "checkout_started": "checkout_started",
    "purchase": "order_placed", "order": "order_placed", "click": "click",
    "payment_failed": "payment_failed", "login": "login",
    # customer-service contacts on the site: se_la is the topic, se_pr the order it is about
    "contact_form_submitted": "contact_form_submitted", "contact-form": "contact_form_submitted",
    "chat_started": "chat_started", "chat-started": "chat_started",
    "chat_ended": "chat_ended", "chat-ended": "chat_ended",
}
UE_EVENTS: Mapping[str, str] = {
    "link_click": "click", "add_to_cart": "add_to_cart", "site_search": "search",
    "checkout_step": "checkout_started", "transaction": "order_placed", "page_view": "page_view",
}
EVENT_KINDS = ("pv", "pp", "se", "ue", "tr", "ti")


class SnowplowError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _json_param(p: Mapping[str, Any], plain: str, encoded: str) -> Any:
    """The JSON in `plain` (e.g. ue_pr) or base64url `encoded` (e.g. ue_px); None if neither."""
    if p.get(plain):
        try:
            return json.loads(p[plain])
        except (ValueError, TypeError) as err:
            raise SnowplowError(plain, f"{plain} is not JSON: {err}") from None
    if p.get(encoded):
        raw = str(p[encoded])
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            return json.loads(data)
        except (binascii.Error, ValueError, TypeError) as err:
            raise SnowplowError(encoded, f"{encoded} is not base64url-encoded JSON: {str(err)[:100]}") from None
    return None


def _ms(value: Any) -> int | None:
    return parse_time(value) if value not in (None, "") else None


def event_time(p: Mapping[str, Any], received_ms: int) -> int:
    true = _ms(p.get("ttm"))
    if true is not None:
        return true
    created, sent = _ms(p.get("dtm")), _ms(p.get("stm"))
    if created is not None and sent is not None:
        return received_ms - (sent - created)
    return created if created is not None else received_ms


def _cents(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(f * 100)) if f == f and abs(f) < 1e15 else None


def to_native(p: Any, received_ms: int) -> dict[str, Any]:
    """One tracker-protocol event (a dict of string parameters) → a native cem event object."""
    if not isinstance(p, Mapping):
        raise SnowplowError("data", "each Snowplow event must be an object of parameters")
    kind = p.get("e")
    if kind not in EVENT_KINDS:
        raise SnowplowError("e", f"e must be one of {', '.join(EVENT_KINDS)}, not {str(kind)[:20]!r}")
    if not p.get("eid"):
        raise SnowplowError("eid", "every Snowplow event needs its event id in eid")
    ids = {"anonymous_id": p.get("duid"), "customer_id": p.get("uid"), "device_id": p.get("nuid"),
           "order_id": p.get("tr_id") or p.get("ti_id")}
    ids = {k: str(v) for k, v in ids.items() if v not in (None, "")}
    if not ids:
        raise SnowplowError("duid", "a Snowplow event needs an identifier: duid, uid or nuid")
    contexts = _json_param(p, "co", "cx")
    if contexts is not None and not (isinstance(contexts, Mapping) and isinstance(contexts.get("data"), list)):
        raise SnowplowError("cx", "contexts must be {\"schema\": …, \"data\": [ … ]}")
    attrs: dict[str, Any] = {"url": p.get("url"), "referrer": p.get("refr")}
    name: str
    contact: dict[str, Any] = {}
    if kind == "pv":
        event_type, name = "page_view", "page_view"
    elif kind in ("tr", "ti"):
        event_type, name = ("order_placed", "transaction") if kind == "tr" else ("custom", "transaction_item")
        attrs["amount_cents"] = _cents(p.get("tr_tt"))
        attrs["currency"] = p.get("tr_cu")
    elif kind == "se":
        category, action = p.get("se_ca"), p.get("se_ac")
        if not category or not action:
            raise SnowplowError("se_ac", "a structured event needs se_ca (category) and se_ac (action)")
        event_type, name = SE_ACTIONS.get(str(action).lower(), "custom"), f"se:{category}/{action}"
        if event_type in CONTACTS:
            contact = {"topic": p.get("se_la")}
            if p.get("se_pr"):
                ids["order_id"] = str(p["se_pr"])
        else:
            attrs["element"], attrs["product_id"] = p.get("se_la"), p.get("se_pr")
        if event_type in ("order_placed", "add_to_cart"):
            attrs["amount_cents"] = _cents(p.get("se_va"))
    elif kind == "ue":
        ue = _json_param(p, "ue_pr", "ue_px")
        inner = ue.get("data") if isinstance(ue, Mapping) else None
        if not isinstance(inner, Mapping) or not isinstance(inner.get("schema"), str):
            raise SnowplowError("ue_pr", "a self-describing event needs ue_pr/ue_px = "
                                "{\"schema\": …, \"data\": {\"schema\": \"iglu:…\", \"data\": {…}}}")
        name = inner["schema"]
        short = name.split("/")[1] if name.count("/") >= 1 else name
        event_type = UE_EVENTS.get(short, "custom")
        data = inner.get("data")
        if not isinstance(data, Mapping):
            data = {}
        attrs["element"] = data.get("elementId") or data.get("targetUrl")
        attrs["product_id"] = data.get("sku")
        attrs["query"] = " ".join(data["terms"]) if isinstance(data.get("terms"), list) else None
        attrs["results_count"] = data.get("totalResults") if isinstance(data.get("totalResults"), int) else None
    else:  # pp
        event_type, name = "custom", "page_ping"
    return {
        "event_id": str(p["eid"]),
        "event_type": event_type,
        "channel": "web",
        "occurred_at": event_time(p, received_ms),
        "identifiers": ids,
        "attributes": {k: (str(v) if k not in ("amount_cents", "results_count") else v)
                       for k, v in attrs.items() if v not in (None, "")},
        "event_name": name,
        "contact": {k: str(v) for k, v in contact.items() if v not in (None, "")} or None,
    }


def payload_events(body: Any) -> list[Any]:
    """The events of a tp2 POST body: `{"schema": "iglu:…/payload_data/…", "data": [ … ]}`."""
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
        raise SnowplowError("data", "POST tp2 body must be {\"schema\": \"iglu:com.snowplowanalytics.snowplow/"
                            "payload_data/jsonschema/1-0-4\", \"data\": [event, …]}")
    return body["data"]
