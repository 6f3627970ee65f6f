"""The customer stage's internal input encoding (`CEM_STAGE_HOP=marshal`, topic cem.stage).

cem.touchpoints stays Avro (landing and analysts read it); the customer stage reads only a few
fields of each event, so ingest and the identity coordinator also send it those fields, already
in the shape of a `Touch`, as one record per destination partition:

    b"cemS\\x01" + marshal.dumps([(customer_id, at, event_id, event_type, channel, subject,
                                   store_id, attrs, received_at), ...], 4)

Why marshal: measured offline (`scripts/hop_bench.py`, simulator events in records of 500)
decoding is ~2 µs an event against ~18 µs for Avro decode plus `touch_of`, and encoding the
tuples ~3.5 µs; it is the standard library's, handles exactly the plain values a Touch holds
(str, int, float, bool, None, dict, list) and never runs code on load (pickle would). Its format
is CPython's own and may change between Python versions: the version byte after the magic
names ours, and every worker of one deployment runs the same Python. The topic is internal:
only cem workers write it, like the state changelog. Still, a record that is not ours — wrong
magic, a marshal error, any value of the wrong type — is a `DecodeError` (the stage
dead-letters it), never an exception inside the stage.
"""
from __future__ import annotations

import marshal
import sys
from typing import Any, Mapping

from cem.sessions import Touch, touch_of
from .serde import DecodeError

MAGIC = b"cemS" + bytes([sys.version_info[1]])  # marshal's format is CPython's, per minor version
_STR = str
_OPT = (str, type(None))


def stage_row(event: Mapping[str, Any], customer: str) -> tuple:
    """What the customer stage reads of `event` (a decoded touchpoint) resolved to `customer`."""
    t = touch_of(event)
    return (customer, t.at, t.event_id, t.event_type, t.channel, t.subject, t.store_id, t.attrs,
            event.get("received_at"))


def encode_rows(rows: list[tuple]) -> bytes:
    return MAGIC + marshal.dumps(rows, 4)


def is_stage_record(value: bytes | None) -> bool:
    return bool(value) and value[:4] == MAGIC[:4]  # type: ignore[index]


def decode_rows(value: bytes | None) -> list[tuple[str, Touch, int | None]]:
    """(customer, touch, received_at) per event; DecodeError when `value` is not a record this
    module wrote (by its magic and Python version, then by every value's type)."""
    if not value or value[:4] != MAGIC[:4]:
        raise DecodeError("undecodable", "not an internal stage record (magic 'cemS'); only cem workers "
                          "write this topic — check which producer wrote it")
    if value[:5] != MAGIC:
        raise DecodeError("stage_version", f"stage record written by Python 3.{value[4]}, this worker runs "
                          f"3.{sys.version_info[1]}; run every worker of a deployment on the same Python")
    try:
        rows = marshal.loads(value[5:])
    except (ValueError, EOFError, TypeError) as err:
        raise DecodeError("undecodable", f"stage record does not decode ({err})") from None
    if type(rows) is not list:
        raise DecodeError("undecodable", "stage record is not a list of events")
    out = []
    for r in rows:
        if not (type(r) is tuple and len(r) == 9 and type(r[0]) is _STR and type(r[1]) is int
                and type(r[2]) is _STR and type(r[3]) is _STR and type(r[4]) is _STR and type(r[5]) is _STR
                and isinstance(r[6], _OPT) and type(r[7]) is dict and (r[8] is None or type(r[8]) is int)):
            raise DecodeError("undecodable", f"stage record holds a malformed event: {str(r)[:200]}")
        out.append((r[0], Touch(r[1], r[2], r[3], r[4], r[5], r[6], r[7]), r[8]))
    return out
