"""Serde for cem topics: the two record shapes of DESIGN.md "Throughput".

* **single event**: Confluent wire format, magic byte 0 + 4-byte big-endian schema id + Avro
  body, what an external producer with a Schema Registry serializer sends;
* **batch**: an Avro Object Container File (starts with ``Obj\\x01``) holding many events that
  belong to the record's partition, what cem's own publisher sends.

`decode_record` accepts either and returns the events as dicts in the reader schema. It never
lets a decoder exception escape: every failure is a `DecodeError` whose `reason` is a stable code
for the DLQ header and metrics. The domain never sees bytes (STYLE.md rule 6).
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, Iterable, cast

import fastavro
from fastavro.read import SchemaResolutionError

from . import ocf
from .registry import SchemaRegistry, UnknownSchemaId

MAGIC = 0
OCF_MAGIC = b"Obj\x01"
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """A record that cannot be turned into events. `reason` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    events: list[dict[str, Any]]
    is_batch: bool
    # each event's Avro body in the reader schema, in the order of `events`, when asked for and
    # the record was written with the reader schema itself (uncompressed); otherwise None
    datums: list[bytes] | None = None


def is_batch(value: bytes) -> bool:
    return value[:4] == OCF_MAGIC


def encode_single(event: dict[str, Any], schema_id: int, parsed_schema: Any) -> bytes:
    """One event in Confluent wire format."""
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, parsed_schema, event)
    return out.getvalue()


def encode_batch(events: Iterable[dict[str, Any]], parsed_schema: Any) -> bytes:
    """Many events as one Avro Object Container File (codec null: Kafka compresses with zstd)."""
    out = io.BytesIO()
    fastavro.writer(out, parsed_schema, events, codec="null", sync_interval=1 << 20)
    return out.getvalue()


def container_schema_json(parsed_schema: Any) -> str:
    """The schema text fastavro writes into a container header for `parsed_schema` (the key
    landing groups blocks by)."""
    out = io.BytesIO()
    fastavro.writer(out, parsed_schema, [], codec="null")
    header = fastavro.block_reader(io.BytesIO(out.getvalue())).metadata["avro.schema"]
    return header.decode() if isinstance(header, bytes) else header


def decode_record(value: bytes | None, registry: SchemaRegistry, reader: Any, *,
                  datums: bool = False) -> DecodedRecord:
    """Decode a Kafka record value of either shape into events in the `reader` schema.

    With `datums=True` the result also carries each event's encoded bytes when they already are
    in the reader schema, so a stage that forwards events can pass them on without re-encoding
    (`cem.schemas.stamp`); the events decoded are the same either way.

    Raises DecodeError (only) on: empty value, unknown magic byte, unknown schema id, a body or
    container that does not decode, or a writer schema that does not resolve to the reader.
    """
    if not value:
        raise DecodeError("empty_record", "the record has no value; send an Avro-encoded event")
    if value[:4] == OCF_MAGIC:
        if datums:
            with_datums = _decode_batch_datums(value, reader)
            if with_datums is not None:
                return DecodedRecord(with_datums[0], True, with_datums[1])
        return DecodedRecord(_decode_batch(value, reader), True)
    if len(value) < 6:
        raise DecodeError("undecodable", f"a {len(value)}-byte record is too short for the "
                          "Confluent wire format (magic byte + schema id + body)")
    magic, schema_id = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise DecodeError("bad_magic_byte", f"first byte is {value[0]:#04x}, expected 0x00 "
                          "(Confluent wire format) or an Avro container file ('Obj\\x01')")
    try:
        writer = registry.writer(schema_id)
    except UnknownSchemaId as err:
        raise DecodeError("unknown_schema_id", f"{err}; register the schema before producing") from None
    buf = io.BytesIO(value)
    buf.seek(5)
    try:
        if writer.parsed is reader:
            event = fastavro.schemaless_reader(buf, writer.parsed, None)
        else:
            event = fastavro.schemaless_reader(buf, writer.parsed, reader)
    except SchemaResolutionError as err:
        raise DecodeError("schema_mismatch", f"schema id {schema_id} does not resolve to the "
                          f"reader schema: {err}") from None
    except Exception as err:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise DecodeError("undecodable", f"Avro body for schema id {schema_id} does not decode "
                          f"({type(err).__name__}: {err})"[:300]) from None
    if buf.tell() != len(value):
        raise DecodeError("undecodable", f"{len(value) - buf.tell()} trailing bytes after the "
                          f"Avro body for schema id {schema_id}")
    if not isinstance(event, dict):
        raise DecodeError("undecodable", "the Avro body is not a record")
    return DecodedRecord([event], False, [value[5:]] if datums and writer.parsed is reader else None)


_SAME_AS_READER: dict[int, str] = {}


def _corrupt_batch(err: Exception) -> DecodeError:
    """The one wording of a container that does not decode, whichever path read it."""
    return DecodeError("corrupt_batch", f"Avro container file does not decode "
                       f"({type(err).__name__}: {err})"[:300])


def _same_as_reader(reader: Any) -> str:
    same = _SAME_AS_READER.get(id(reader))
    if same is None:
        same = _SAME_AS_READER[id(reader)] = container_schema_json(reader)
    return same


def _decode_batch_datums(value: bytes, reader: Any) -> tuple[list[dict[str, Any]], list[bytes]] | None:
    """Events and their encoded bytes, read datum by datum from the container's blocks (as fast
    as fastavro's reader here); None when the container is not in the reader schema, is
    compressed, or does not scan (the caller then decodes it the usual way, which also words the
    error the usual way)."""
    try:
        container = ocf.scan(value)
    except ocf.CorruptContainer:
        return None
    if container.codec != "null" or container.schema_json != _same_as_reader(reader):
        return None
    events: list[dict[str, Any]] = []
    datums: list[bytes] = []
    read = fastavro.schemaless_reader
    for count, data in container.blocks:
        buf = io.BytesIO(data)
        start = 0
        try:
            for _ in range(count):  # bytes left over after `count` records are ignored, as fastavro does
                # fastavro types a datum as any Avro value; with a record schema it is a dict
                events.append(read(buf, reader, None))  # type: ignore[arg-type]
                end = buf.tell()
                datums.append(data[start:end])
                start = end
        except Exception as err:  # EOFError, ValueError, UnicodeDecodeError, ...
            raise _corrupt_batch(err) from None
    return events, datums


def _decode_batch(value: bytes, reader: Any) -> list[dict[str, Any]]:
    try:
        rd = fastavro.reader(io.BytesIO(value))
        header = rd.metadata.get("avro.schema")
        same = _same_as_reader(reader)
        if header == same:  # written with the reader schema: skip resolution (2x faster)
            return list(cast(Iterable[dict[str, Any]], rd))  # a record schema's datums are dicts
        return list(cast(Iterable[dict[str, Any]], fastavro.reader(io.BytesIO(value), reader)))
    except SchemaResolutionError as err:
        raise DecodeError("schema_mismatch", f"the batch's schema does not resolve to the "
                          f"reader schema: {err}"[:300]) from None
    except Exception as err:
        raise _corrupt_batch(err) from None
