"""Segment's HTTP Tracking API messages → cem's native event objects (pure; no I/O).

The collector's Segment endpoints (`connectors/trackers.py`) hand each message here and pass
the result to the same mapping, validation, pseudonymization and DLQ as native events.

Mapping (documented in README "Drop-in for Segment and Snowplow"):
- `messageId` is the event_id (Segment's dedup id); `anonymousId` → anonymous_id, `userId` →
  customer_id, `context.traits.email` / `traits.email` → email (hashed at the edge),
  `context.device.id` → device_id, `properties.order_id` → order_id.
- `page` / `screen` → page_view (url from `properties.url` or `context.page.url`), `identify` →
  identify, `alias` → identify linking `previousId` (as anonymous_id) to `userId`, `group` →
  custom. `track` events by name: the e-commerce spec events in `TRACK_EVENTS`; any other name
  is a `custom` web event, never dropped. The sender's own name is kept in `event_name`.
- Event time: Segment's clock-skew correction, `timestamp = receivedAt - (sentAt -
  originalTimestamp)` when the message carries `sentAt` (the device's send time), where
  originalTimestamp is the message's `originalTimestamp`, else its `timestamp`; without `sentAt`
  the message's own time is used; without any, the receive time.
"""
from __future__ import annotations

from typing import Any, Mapping

from cem.events import CONTACTS

from .mapping import parse_time

#: Segment e-commerce spec event names → cem web event types.
TRACK_EVENTS: Mapping[str, str] = {
    "Products Searched": "search",
    "Product Searched": "search",
    "Product List Viewed": "page_view",
    "Product Viewed": "page_view",
    "Product Clicked": "click",
    "Product Added": "add_to_cart",
    "Cart Viewed": "page_view",
    "Checkout Started": "checkout_started",
    "Checkout Step Viewed": "checkout_started",
    "Payment Info Entered": "checkout_started",
    "Order Completed": "order_placed",
    "Payment Failed": "payment_failed",
    "Signed In": "login",
    "Element Clicked": "click",
    # customer-service contacts on the site (properties: topic or reason, order_id, ticket_id, resolved)
    "Contact Form Submitted": "contact_form_submitted",
    "Chat Started": "chat_started",
    "Live Chat Started": "chat_started",
    "Chat Ended": "chat_ended",
    "Live Chat Ended": "chat_ended",
}
TYPES = ("track", "identify", "page", "screen", "alias", "group")


class SegmentError(ValueError):
    """A message cem cannot read as Segment's spec; `field` names what was wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _text(value: Any) -> str | None:
    """Scalars as text (a product id sent as a number is still an id); structures dropped."""
    if value is None or isinstance(value, (Mapping, list, bool)):
        return None
    return str(value)


def _cents(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return int(round(value * 100))


def event_time(msg: Mapping[str, Any], received_ms: int) -> int:
    """Segment's skew-corrected event time in epoch ms (see the module docstring)."""
    original = parse_time(msg.get("originalTimestamp")) or parse_time(msg.get("timestamp"))
    sent = parse_time(msg.get("sentAt"))
    if original is not None and sent is not None:
        return received_ms - (sent - original)
    return original if original is not None else received_ms


def to_native(msg: Any, received_ms: int, batch_sent_at: Any = None) -> dict[str, Any]:
    """One Segment message → a native cem event object (then `mapping.to_touchpoint`).
    `batch_sent_at` is the batch's `sentAt`, used when a message has none of its own."""
    if not isinstance(msg, Mapping):
        raise SegmentError("message", "a Segment message must be a JSON object")
    kind = msg.get("type")
    if kind not in TYPES:
        raise SegmentError("type", f"type must be one of {', '.join(TYPES)}, not {str(kind)[:40]!r}")
    if batch_sent_at is not None and "sentAt" not in msg:
        msg = {**msg, "sentAt": batch_sent_at}
    props = msg.get("properties") if isinstance(msg.get("properties"), Mapping) else {}
    ids = {
        "anonymous_id": msg.get("anonymousId"),
        "customer_id": msg.get("userId"),
        "device_id": _get(msg, "context", "device", "id"),
        "email": _get(msg, "context", "traits", "email") or _get(msg, "traits", "email"),
        "order_id": props.get("order_id") or props.get("orderId"),
    }
    if kind == "alias":
        ids["anonymous_id"] = msg.get("previousId") or ids["anonymous_id"]
    ids = {k: str(v) for k, v in ids.items() if v not in (None, "") and not isinstance(v, (Mapping, list))}
    if not (ids.get("anonymous_id") or ids.get("customer_id")):
        raise SegmentError("anonymousId", "every Segment message needs anonymousId or userId")
    name = msg.get("event") if kind == "track" else msg.get("name")
    if kind == "track":
        if not isinstance(name, str) or not name:
            raise SegmentError("event", "a track call needs the event name in 'event'")
        event_type = TRACK_EVENTS.get(name, "custom")
    else:
        event_type = {"page": "page_view", "screen": "page_view", "identify": "identify",
                      "alias": "identify", "group": "custom"}[kind]
    attrs = {
        "url": props.get("url") or _get(msg, "context", "page", "url"),
        "referrer": props.get("referrer") or _get(msg, "context", "page", "referrer"),
        "query": _text(props.get("query")),
        "product_id": _text(props.get("product_id") or props.get("productId") or props.get("sku")),
        "element": _text(props.get("element")),
        "currency": props.get("currency"),
        "amount_cents": _cents(props.get("revenue", props.get("total", props.get("price")))),
        "error_code": props.get("error_code") or props.get("reason") if event_type == "payment_failed" else None,
        "results_count": props.get("results_count") if isinstance(props.get("results_count"), int) else None,
    }
    out = {
        "event_id": msg.get("messageId") or None,
        "event_type": event_type,
        "channel": "web",
        "occurred_at": event_time(msg, received_ms),
        "identifiers": ids,
        "attributes": {k: v for k, v in attrs.items() if v not in (None, "")},
        "event_name": f"{kind}:{name}" if isinstance(name, str) and name else kind,
    }
    if event_type in CONTACTS or event_type == "chat_ended":
        contact = {"topic": _text(props.get("topic") or props.get("reason")),
                   "case_id": _text(props.get("ticket_id") or props.get("case_id")),
                   "resolved": props.get("resolved") if isinstance(props.get("resolved"), bool) else None}
        out["contact"] = {k: v for k, v in contact.items() if v not in (None, "")} or None
    if not out["event_id"]:
        raise SegmentError("messageId", "every Segment message needs a messageId (its dedup id)")
    return out
