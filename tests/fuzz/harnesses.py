"""atheris harnesses for every decoder a stranger can reach. Each target takes fuzzer bytes and
must either accept them or refuse them with the decoder's own error type (a reason for the DLQ or
the HTTP answer); any other exception is a crash. Run one for a bounded time:

    python -m tests.fuzz.harnesses NAME -max_total_time=20 [corpus dirs …]

(tests/fuzz/test_fuzz.py does this for every target in CI, seeded with the hostile corpus.)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

NOW = 1_795_000_000_000
HORIZON = 400 * 86_400_000


def _json(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # the collector answers 400 bad_json before any decoder runs


def collector_json(data: bytes) -> None:
    from cem.connectors.mapping import to_touchpoint
    from cem.connectors.pseudonymize import Pseudonymizer
    from cem.events import Rejection
    doc = _json(data)
    batch = doc.get("batch") if isinstance(doc, dict) else doc
    for obj in batch if isinstance(batch, list) else [doc]:
        r = to_touchpoint(obj, default_channel="web", source="fuzz", now_ms=NOW, horizon_ms=HORIZON,
                          pseudonymizer=Pseudonymizer(b"k"))
        assert isinstance(r, (dict, Rejection))


def segment_json(data: bytes) -> None:
    from cem.connectors import segment
    doc = _json(data)
    messages = doc.get("batch") if isinstance(doc, dict) and isinstance(doc.get("batch"), list) else [doc]
    for msg in messages:
        try:
            native = segment.to_native(msg, NOW, doc.get("sentAt") if isinstance(doc, dict) else None)
        except segment.SegmentError:
            continue
        collector_json(json.dumps(native).encode())


def snowplow_payload(data: bytes) -> None:
    from urllib.parse import parse_qsl
    from cem.connectors import snowplow
    doc = _json(data)
    try:
        events = snowplow.payload_events(doc) if doc is not None else [dict(parse_qsl(data.decode("latin-1")))]
    except snowplow.SnowplowError:
        return
    for e in events:
        try:
            native = snowplow.to_native(e, NOW)
        except snowplow.SnowplowError:
            continue
        collector_json(json.dumps(native).encode())


def importer_row(data: bytes) -> None:
    from cem.connectors.importers import MappingConflict, load_mapping, row_to_object
    doc = _json(data)
    if not isinstance(doc, dict):
        return
    for channel in ("store", "web", "phone", "returns", "feedback"):
        try:
            obj = row_to_object({str(k): v for k, v in doc.items()}, load_mapping(channel, None), set())
        except MappingConflict:
            continue  # dead-lettered as mapping_conflict
        collector_json(json.dumps(obj, default=str).encode())


def avro_record(data: bytes) -> None:
    """Both ways a record is decoded — to events (ingest, customer agent), and to events with each
    one's bytes (coordinator) — accept and refuse the same records, for the same reason; every
    stamped event decodes to the event with its resolution; and landing's container scan refuses
    with CorruptContainer only."""
    from cem.schemas.ocf import CorruptContainer, scan
    from cem.schemas.registry import default_registry
    from cem.schemas.serde import DecodeError, decode_record
    reg = default_registry()
    reader = reg.latest("touchpoint").parsed
    outcomes = []
    decoded = None
    for datums in (False, True):
        try:
            decoded = decode_record(data, reg, reader, datums=datums)
            outcomes.append(decoded.events)
        except DecodeError as err:
            outcomes.append(err.reason)
    if outcomes[0] != outcomes[1]:
        raise AssertionError(f"decoding with datums differs: {outcomes[0]!r:.200} vs {outcomes[1]!r:.200}")
    if decoded is not None:  # what the coordinator forwards decodes to the event, resolved
        import io
        import fastavro
        from cem.schemas.stamp import Stamper
        stamper = Stamper.for_schema(reader)
        # datums are None when the record was not written with the reader schema: nothing to stamp
        pairs = zip(decoded.events, decoded.datums, strict=True) if decoded.datums is not None else ()
        for event, datum in pairs:
            stamped = stamper.stamp(datum, event, "c-1", False, 1)
            if stamped is not None:
                got = fastavro.schemaless_reader(io.BytesIO(stamped), reader, None)
                want = dict(event, cem={"customer_id": "c-1", "late": False, "processed_at": 1})
                if got != want:
                    raise AssertionError(f"stamped event decodes to {got!r:.200}")
    if data[:4] == b"Obj\x01":
        try:
            scan(data)
        except CorruptContainer:
            pass


def rule_file(data: bytes) -> None:
    from cem.rules import RuleError, load_routes, load_rules
    with tempfile.NamedTemporaryFile("wb", suffix=".toml") as f:
        f.write(data)
        f.flush()
        for load in (load_rules, load_routes):
            try:
                load(Path(f.name))
            except RuleError:
                pass


TARGETS = {f.__name__: f for f in (collector_json, segment_json, snowplow_payload, importer_row, avro_record,
                                   rule_file)}


def main() -> None:
    import atheris
    name = sys.argv.pop(1)
    target = TARGETS[name]
    import importlib
    with atheris.instrument_imports():  # coverage feedback from cem's decoders
        for module in ("cem.connectors.mapping", "cem.connectors.segment", "cem.connectors.snowplow",
                       "cem.schemas.serde", "cem.rules", "cem.connectors.importers"):
            importlib.import_module(module)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
