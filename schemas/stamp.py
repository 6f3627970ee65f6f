"""Stamp cem's identity resolution into an encoded touchpoint without re-encoding it.

An Avro record is encoded as its fields' encodings one after another, with no lengths or
offsets in between. A touchpoint that arrives with `cem` null therefore carries that field as a
single byte (the union's null branch), and setting it replaces that one byte by the Resolution
branch's encoding, leaving every byte before and after as it was. The identity coordinator
forwards each event this way: re-encoding a decoded event is the costliest step of a forward
(~11 µs an event, measured; a stamp is about a microsecond). Its input is what ingest encoded;
bytes as a producer wrote them are never stamped and forwarded (streams/ingest.py says why), but
the stamp still refuses what it cannot splice safely.

Contract of `Stamper.stamp(datum, event, ...)`: `datum` is the Avro encoding of `event` in the
stamper's schema (as `decode_record(..., datums=True)` hands them out); the result decodes to
`event` with `cem` set to the given resolution, and is byte for byte what encoding it would
give when `datum` was encoded canonically (as every Avro library writes). It returns None, never
raises, when it cannot stamp safely, and the caller encodes the event instead:
- `cem` already set, or bytes that do not have the layout the decoded trailing fields imply
  (a longer-than-needed varint among the trailing fields lands the splice on a byte that is
  not the null branch; a longer-than-needed null branch of `cem` itself ends in 0x80 0x00 and is
  refused by the byte before it, as is the rare canonical datum whose byte there is 0x80);
- a boolean is set anywhere in the event: a decoder reads any nonzero byte as true, while
  ClickHouse refuses a boolean byte other than 0 or 1, so those events are re-encoded.

Which fields follow `cem` is read from the schema: each must be a union of null and string (the
encoded size is then known from the decoded value). `Stamper.for_schema` returns None for a
schema where that does not hold, and the caller always encodes; a unit test keeps the current
touchpoint schema stampable.
"""
from __future__ import annotations

from typing import Any, Mapping

from .ocf import write_long

FIELD = "cem"


def _branches(field_type: Any) -> list[Any] | None:
    return field_type if isinstance(field_type, list) else None


def _boolean_paths(field_type: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Paths (field names from the top) to every boolean under a field of this type; a union's
    record branches are searched too (the decoded value is the record's dict either way)."""
    if field_type == "boolean":
        return [path]
    if isinstance(field_type, list):
        return [p for branch in field_type for p in _boolean_paths(branch, path)]
    if isinstance(field_type, dict):
        if field_type.get("type") == "boolean":
            return [path]
        if field_type.get("type") == "record":
            return [p for f in field_type.get("fields", []) for p in _boolean_paths(f["type"], path + (f["name"],))]
        if field_type.get("type") in ("array", "map"):
            return [path]  # inside a collection: any value there makes the event re-encoded
    return []


class Stamper:
    """Sets the `cem` field (a union of null and the Resolution record) of encoded touchpoints."""

    def __init__(self, trailing: tuple[str, ...], branch: int,
                 booleans: tuple[tuple[str, ...], ...] = ()):
        self._trailing = trailing
        self._booleans = booleans
        self._branch = write_long(branch)
        self._last_at: int | None = None
        self._last_tail = b""

    @classmethod
    def for_schema(cls, parsed: Mapping[str, Any]) -> "Stamper | None":
        fields = parsed.get("fields") or []
        names = [f["name"] for f in fields]
        if FIELD not in names:
            return None
        at = names.index(FIELD)
        branches = _branches(fields[at]["type"])
        if not branches or branches[0] != "null":
            return None
        record = next((i for i, b in enumerate(branches) if isinstance(b, dict)
                       and [f["name"] for f in b.get("fields", [])] == ["customer_id", "late", "processed_at"]),
                      None)
        if record is None:
            return None
        for f in fields[at + 1:]:
            if _branches(f["type"]) != ["null", "string"]:
                return None
        booleans = tuple(path for f in fields[:at] for path in _boolean_paths(f["type"], (f["name"],)))
        return cls(tuple(names[at + 1:]), record, booleans)

    def resolution(self, customer_id: str, late: bool, processed_at: int) -> bytes:
        """The encoding of the `cem` field set to this resolution (branch index included)."""
        if processed_at != self._last_at:  # one `now` per input record: encode it once
            self._last_at = processed_at
            self._last_tail = write_long(processed_at)
        cid = customer_id.encode()
        return b"".join((self._branch, write_long(len(cid)), cid, b"\x01" if late else b"\x00",
                         self._last_tail))

    def stamp(self, datum: bytes, event: Mapping[str, Any], customer_id: str, late: bool,
              processed_at: int) -> bytes | None:
        if event.get(FIELD) is not None:
            return None
        for path in self._booleans:
            value: Any = event
            for name in path:
                value = value.get(name) if isinstance(value, dict) else None
                if value is None:
                    break
            if value is not None:
                return None
        tail = 0
        for name in self._trailing:
            value = event.get(name)
            if value is None:
                tail += 1
            elif isinstance(value, str):
                n = len(value.encode())
                tail += 1 + len(write_long(n)) + n
            else:
                return None
        at = len(datum) - tail - 1
        if at < 1 or datum[at] != 0 or datum[at - 1] == 0x80:
            return None
        return b"".join((datum[:at], self.resolution(customer_id, late, processed_at), datum[at + 1:]))
