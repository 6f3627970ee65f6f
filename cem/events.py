"""The touchpoint catalogue and the envelope validation rules (pure).

A touchpoint is handled as the plain dict the Avro decoder produces (field names as in
`schemas/touchpoint.avsc`), because the hot path loops over hundreds of thousands of them a
second and a dataclass per event would double its cost. This module owns what makes such a
dict valid; it never raises on bad input: `validate` returns a `Rejection` naming the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

CHANNELS: tuple[str, ...] = ("store", "web", "phone", "returns", "feedback", "email")

EVENT_TYPES: Mapping[str, frozenset[str]] = {
    "web": frozenset({"page_view", "search", "click", "add_to_cart", "checkout_started",
                      "payment_failed", "order_placed", "error", "login", "identify", "custom",
                      "contact_form_submitted", "chat_started", "chat_ended"}),
    "store": frozenset({"visit_started", "item_unavailable", "queue_wait", "purchase",
                        "loyalty_scan", "visit_ended", "service_desk_visit"}),
    "phone": frozenset({"call_started", "ivr_step", "hold", "transfer", "call_ended"}),
    "returns": frozenset({"return_requested", "return_received", "refund_issued"}),
    "feedback": frozenset({"survey_response", "review"}),
    "email": frozenset({"email_received", "email_sent"}),
}

#: A customer reaching out to service, on any channel: what `repeat_contact` counts. The
#: touchpoint's `contact` record says what it is about (`topic`), its case and how it ended.
CONTACTS: frozenset[str] = frozenset({"call_started", "contact_form_submitted", "chat_started",
                                      "email_received", "service_desk_visit"})
#: The events that close a contact, carrying whether it was resolved (`contact.resolved`, or a
#: call's `phone.resolved`): what first-contact resolution counts. A contact form is answered
#: by an `email_sent`; a service-desk visit opens and closes in one event.
CONTACT_ENDS: frozenset[str] = frozenset({"call_ended", "chat_ended", "email_sent", "service_desk_visit"})

IDENTIFIER_KINDS: tuple[str, ...] = ("anonymous_id", "device_id", "customer_id", "loyalty_id",
                                     "email_hash", "phone_hash", "order_id")

#: How far in the future an event time may be before it is rejected (clock skew allowance).
MAX_FUTURE_MS = 23 * 3600 * 1000
#: Event times before 2000-01-01 are certainly broken clocks or seconds-instead-of-ms.
MIN_EVENT_TIME_MS = 946_684_800_000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused. `reason` is a stable machine code (a metrics label and the
    DLQ `cem-reason` header); `detail` tells a person what was wrong and what to do."""

    reason: str
    detail: str


def validate(event: Mapping[str, Any], now_ms: int, horizon_ms: int) -> Rejection | None:
    """Return None when `event` is a valid touchpoint, else the first rule it breaks.

    `now_ms` is the validator's wall clock; `horizon_ms` is how old an event may be.
    Checks run cheapest first; the function is total (never raises) on any mapping.
    """
    for name in ("event_id", "event_type", "channel", "source"):
        value = event.get(name)
        if not value or not isinstance(value, str) or not value.strip():
            return Rejection(f"missing_field:{name}",
                             f"required field '{name}' is missing or empty; set it in the producer")
    channel = event["channel"]
    types = EVENT_TYPES.get(channel)
    if types is None:
        return Rejection("unknown_channel",
                         f"channel '{channel[:40]}' is not one of {', '.join(CHANNELS)}")
    if event["event_type"] not in types:
        return Rejection("unknown_event_type",
                         f"event_type '{event['event_type'][:40]}' is not a {channel} event; "
                         f"known: {', '.join(sorted(types))}")
    occurred = event.get("occurred_at")
    if not isinstance(occurred, int) or occurred <= 0:
        return Rejection("missing_field:occurred_at",
                         "occurred_at must be epoch milliseconds (UTC) > 0")
    if occurred > now_ms + MAX_FUTURE_MS:
        return Rejection("future_timestamp",
                         f"occurred_at is {(occurred - now_ms) / 3_600_000:.1f} h in the future; "
                         "check the producer's clock and that it sends milliseconds")
    if occurred < MIN_EVENT_TIME_MS or occurred < now_ms - horizon_ms:
        return Rejection("too_old",
                         "occurred_at is older than the accepted horizon "
                         "(CEM_ACCEPT_HORIZON_DAYS); raise that setting to accept older history")
    ids = event.get("identifiers") or {}
    # without consent the identifiers are withheld anyway (cem.privacy), so none is needed
    if event.get("consent") is not False and not any(ids.get(kind) for kind in IDENTIFIER_KINDS):
        return Rejection("no_identifier",
                         "the event carries no identifier; send at least anonymous_id or device_id")
    for other in CHANNELS:
        if other != channel and event.get(other) is not None:
            return Rejection("attributes_mismatch",
                             f"a {channel} event carries {other} attributes; "
                             f"put them under '{channel}'")
    attrs = event.get(channel)
    if isinstance(attrs, tuple):  # (record name, value) as the encoder takes it
        attrs = attrs[1]
    if attrs:  # every attribute is optional; those present must be in range
        for name, (low, high) in _RANGES.get(channel, {}).items():
            value = attrs.get(name)
            if value is not None and not low <= value <= high:
                return Rejection(f"bad_value:{channel}.{name}",
                                 f"{channel}.{name} = {value} is outside {low}..{high}")
    return None


def repair_received_at(event: dict[str, Any], now_ms: int) -> bool:
    """Set `received_at` to `now_ms` when the producer's value cannot be a receipt time (not an
    int, before 2000-01-01, or further ahead of `now_ms` than the clock-skew allowance) and
    return True; otherwise leave it and return False. A receipt time is the producer's claim,
    but a wrong one would land as a date in year 0 or 9999 and skew every latency figure built
    on it (alert latency, row latency), so cem's first stage keeps a plausible one, as
    Segment's servers set receivedAt and Snowplow's collector sets collector_tstamp. The event
    itself is fine, so it is not refused. Pure; changes `event` in place."""
    received = event.get("received_at")
    if isinstance(received, int) and MIN_EVENT_TIME_MS <= received <= now_ms + MAX_FUTURE_MS:
        return False
    event["received_at"] = now_ms
    return True


_RANGES: Mapping[str, Mapping[str, tuple[int, int]]] = {
    "feedback": {"nps": (0, 10), "csat": (1, 5), "rating": (1, 5)},
    "store": {"wait_seconds": (0, 86_400), "items": (0, 100_000)},
    "phone": {"hold_seconds": (0, 86_400), "duration_seconds": (0, 86_400)},
    "web": {"results_count": (0, 2 ** 31 - 1), "x": (-2 ** 31, 2 ** 31 - 1), "y": (-2 ** 31, 2 ** 31 - 1)},
}
