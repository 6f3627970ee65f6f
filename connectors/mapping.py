"""JSON objects (collector requests, JSONL/CSV importer rows) → touchpoint dicts.

One mapping for every edge, so a field means the same thing whether it came over HTTP or from a
file. The input shape is the touchpoint envelope (with its `contact` object for customer-service
contacts: topic, case_id, resolved, agent_id) with two conveniences: attributes may sit under
`attributes` (or under the channel's name), and identifiers may carry a raw `email` / `phone`,
which are pseudonymized here and never passed on. `occurred_at` is epoch ms or ISO-8601.
Returns the touchpoint or a `Rejection` naming the field; never raises on bad input.
"""
from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import AbstractSet, Any, Mapping

from cem.events import CHANNELS, IDENTIFIER_KINDS, Rejection, validate
from .pseudonymize import Pseudonymizer, PseudonymizationError

#: Attribute fields per channel and their JSON types (mirrors schemas/touchpoint.avsc).
ATTRIBUTE_TYPES: dict[str, dict[str, type]] = {
    "web": {"url": str, "referrer": str, "query": str, "results_count": int, "element": str, "x": int,
            "y": int, "product_id": str, "amount_cents": int, "currency": str, "error_code": str},
    "store": {"terminal_id": str, "product_id": str, "wait_seconds": int, "amount_cents": int,
              "currency": str, "items": int},
    "phone": {"call_id": str, "ivr_step": str, "hold_seconds": int, "queue": str, "agent_id": str,
              "reason": str, "resolved": bool, "duration_seconds": int},
    "returns": {"rma_id": str, "reason": str, "product_id": str, "amount_cents": int, "currency": str},
    "feedback": {"survey_id": str, "nps": int, "csat": int, "rating": int, "comment": str},
    "email": {"thread_id": str, "mailbox": str},
}
#: The `contact` record (any channel): what a customer-service contact is about and how it ended.
CONTACT_TYPES: dict[str, type] = {"topic": str, "case_id": str, "resolved": bool, "agent_id": str}
MAX_STRING = 4096
_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1
_LONG_FIELDS = {"amount_cents"}


#: An integer in text: ASCII digits, one optional minus, short enough for int() (not "--2",
#: not "²", not 5,000 digits — all found by the fuzzer or Python's own limits).
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def parse_time(value: Any) -> int | None:
    """Epoch milliseconds from an int/float (ms) or an ISO-8601 string; None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return int(value)
    if isinstance(value, str) and value:
        s = value.strip()
        if _INTEGER.fullmatch(s):
            return int(s)
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp() * 1000)
    return None


def _typed_object(raw: Mapping, types: Mapping[str, type], prefix: str, what: str,
                  long_fields: AbstractSet[str]) -> dict[str, Any] | Rejection:
    """`raw`'s fields coerced to `types` (attributes of a channel, the contact record), or the
    Rejection of the first unknown or ill-typed one, named `<prefix>.<field>`."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = types.get(key)
        if kind is None:
            return Rejection(f"unknown_field:{prefix}.{str(key)[:40]}",
                             f"'{str(key)[:40]}' is not {what}; known: {', '.join(types)}")
        v, bad = _coerce(value, kind, f"{prefix}.{key}", key in long_fields)
        if bad:
            return bad
        out[key] = v
    return out


def _coerce(value: Any, kind: type, name: str, long_ok: bool) -> tuple[Any, Rejection | None]:
    if value is None or value == "":
        return None, None
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes"), None
    elif kind is int:
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if long_ok or _INT_MIN <= value <= _INT_MAX:
                if -(2 ** 63) <= value < 2 ** 63:
                    return value, None
            return None, Rejection(f"bad_value:{name}", f"'{name}' is out of range")
    elif kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                return None, Rejection(f"too_long:{name}", f"'{name}' is longer than {MAX_STRING} characters")
            return value, None
    return None, Rejection(f"bad_type:{name}", f"'{name}' must be {kind.__name__}, got {type(value).__name__}")


def to_touchpoint(obj: Any, *, default_channel: str | None, source: str, now_ms: int,
                  horizon_ms: int, pseudonymizer: Pseudonymizer) -> dict[str, Any] | Rejection:
    if not isinstance(obj, Mapping):
        return Rejection("not_an_object", "each event must be a JSON object")
    channel = obj.get("channel") or default_channel
    if channel not in CHANNELS:
        return Rejection("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}")
    occurred = parse_time(obj.get("occurred_at", obj.get("timestamp")))
    if occurred is None:
        return Rejection("missing_field:occurred_at",
                         "occurred_at must be epoch milliseconds or ISO-8601 with a time zone")
    raw_ids = obj.get("identifiers") or {}
    if not isinstance(raw_ids, Mapping):
        return Rejection("bad_type:identifiers", "identifiers must be an object")
    ids: dict[str, Any] = {}
    for key, value in raw_ids.items():
        if value is None or value == "":
            continue
        try:
            if key == "email":
                ids["email_hash"] = pseudonymizer.email_hash(str(value))
            elif key == "phone":
                ids["phone_hash"] = pseudonymizer.phone_hash(str(value))
            elif key in IDENTIFIER_KINDS:
                v, bad = _coerce(value, str, f"identifiers.{key}", False)
                if bad:
                    return bad
                ids[key] = v
            else:
                return Rejection(f"unknown_field:identifiers.{key}",
                                 f"unknown identifier '{key[:40]}'; known: {', '.join(IDENTIFIER_KINDS)}, email, phone")
        except PseudonymizationError as err:
            return Rejection(f"bad_value:identifiers.{key}", str(err))
    raw_attrs = obj.get("attributes", obj.get(channel)) or {}
    if not isinstance(raw_attrs, Mapping):
        return Rejection("bad_type:attributes", "attributes must be an object")
    attrs = _typed_object(raw_attrs, ATTRIBUTE_TYPES[channel], "attributes", f"a {channel} attribute", _LONG_FIELDS)
    if isinstance(attrs, Rejection):
        return attrs
    raw_contact = obj.get("contact") or {}
    if not isinstance(raw_contact, Mapping):
        return Rejection("bad_type:contact", "contact must be an object like {\"topic\": \"delivery\"}")
    contact = _typed_object(raw_contact, CONTACT_TYPES, "contact", "a contact field", frozenset())
    if isinstance(contact, Rejection):
        return contact
    event_id = obj.get("event_id") or str(uuid.uuid4())
    strings = {}
    for name in ("event_type", "store_id", "location", "event_name"):
        v, bad = _coerce(obj.get(name), str, name, False)
        if bad:
            return bad
        strings[name] = v
    eid, bad = _coerce(event_id, str, "event_id", False)
    if bad:
        return bad
    consent, bad = _coerce(obj.get("consent"), bool, "consent", False)
    if bad:
        return bad
    if consent is False:
        ids = {}  # withheld at the edge already: identifiers without consent never reach Kafka
    event = {"event_id": eid, "event_type": strings["event_type"], "channel": channel,
             "occurred_at": occurred, "received_at": now_ms, "source": source, "identifiers": ids,
             "store_id": strings["store_id"], "location": strings["location"], channel: attrs,
             "event_name": strings["event_name"], "consent": consent, "contact": contact or None}
    rejection = validate(event, now_ms, horizon_ms)
    return rejection or event
