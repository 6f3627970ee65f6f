import io

import fastavro
import pytest

from cem.connectors.generate import MALFORMED_KINDS, batch_records, malformed
from cem.identity import customer_key
from cem.kafka.partitioning import partition_for
from cem.settings import RAW_TOPICS
from cem.events import CHANNELS
from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.schemas.serde import DecodeError, decode_record, encode_batch, encode_single

REG = default_registry()
W = REG.latest("touchpoint")


def normalized(ev: dict) -> dict:
    """What the decoder returns for an event: every optional field present."""
    return fastavro.schemaless_reader(io.BytesIO(_body(ev)), W.parsed, None)


def _body(ev):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, W.parsed, ev)
    return buf.getvalue()


@pytest.mark.parametrize("channel", CHANNELS)
def test_single_event_round_trip_per_channel(channel):
    for ev in touchpoints(20, start_ms=1_790_000_000_000, channels=(channel,)):
        wire = encode_single(ev, W.id, W.parsed)
        assert wire[0] == 0 and int.from_bytes(wire[1:5], "big") == W.id
        decoded = decode_record(wire, REG, W.parsed)
        assert not decoded.is_batch
        assert decoded.events == [normalized(ev)]
        assert decoded.events[0][channel] is not None


@pytest.mark.parametrize("channel", CHANNELS)
def test_batch_round_trip_per_channel(channel):
    events = list(touchpoints(300, start_ms=1_790_000_000_000, channels=(channel,)))
    data = encode_batch(events, W.parsed)
    assert data[:4] == b"Obj\x01"
    decoded = decode_record(data, REG, W.parsed)
    assert decoded.is_batch
    assert decoded.events == [normalized(e) for e in events]


@pytest.mark.parametrize("kind", ["garbage", "wrong_magic", "unknown_schema"])
def test_undecodable_records_raise_decode_error_with_reason(kind):
    template = next(touchpoints(1, start_ms=1_790_000_000_000))
    with pytest.raises(DecodeError) as err:
        decode_record(malformed(kind, template, REG), REG, W.parsed)
    assert err.value.reason == MALFORMED_KINDS[kind]


@pytest.mark.parametrize("value, reason", [
    (b"", "empty_record"), (None, "empty_record"), (b"\x00\x00\x00", "undecodable"),
])
def test_short_records(value, reason):
    with pytest.raises(DecodeError) as err:
        decode_record(value, REG, W.parsed)
    assert err.value.reason == reason


def test_trailing_bytes_are_refused():
    ev = next(touchpoints(1, start_ms=1_790_000_000_000))
    with pytest.raises(DecodeError) as err:
        decode_record(encode_single(ev, W.id, W.parsed) + b"\x00\x01", REG, W.parsed)
    assert err.value.reason == "undecodable"


def test_truncated_container_is_corrupt_batch():
    data = encode_batch(list(touchpoints(50, start_ms=1_790_000_000_000)), W.parsed)
    with pytest.raises(DecodeError) as err:
        decode_record(data[: len(data) // 2], REG, W.parsed)
    assert err.value.reason == "corrupt_batch"


def test_container_with_unresolvable_schema_is_schema_mismatch():
    other = fastavro.parse_schema({"type": "record", "name": "Touchpoint", "namespace": "io.cem",
                                   "fields": [{"name": "event_id", "type": "long"}]})
    buf = io.BytesIO()
    fastavro.writer(buf, other, [{"event_id": 1}])
    with pytest.raises(DecodeError) as err:
        decode_record(buf.getvalue(), REG, W.parsed)
    assert err.value.reason == "schema_mismatch"


def test_datums_are_each_events_own_bytes_in_order():
    events = list(touchpoints(700, start_ms=1_790_000_000_000))
    buf = io.BytesIO()
    fastavro.writer(buf, W.parsed, events, codec="null", sync_interval=20_000)  # several blocks
    decoded = decode_record(buf.getvalue(), REG, W.parsed, datums=True)
    assert decoded.events == [normalized(e) for e in events]
    assert decoded.datums == [_body(e) for e in decoded.events]
    single = encode_single(events[0], W.id, W.parsed)
    assert decode_record(single, REG, W.parsed, datums=True).datums == [_body(events[0])]
    assert decode_record(buf.getvalue(), REG, W.parsed).datums is None  # only when asked


def test_no_datums_for_a_compressed_container_but_the_same_events():
    events = list(touchpoints(50, start_ms=1_790_000_000_000))
    buf = io.BytesIO()
    fastavro.writer(buf, W.parsed, events, codec="deflate")
    decoded = decode_record(buf.getvalue(), REG, W.parsed, datums=True)
    assert decoded.datums is None
    assert decoded.events == [normalized(e) for e in events]


def test_corrupt_containers_are_refused_the_same_when_datums_are_asked_for():
    data = encode_batch(list(touchpoints(50, start_ms=1_790_000_000_000)), W.parsed)
    with pytest.raises(DecodeError) as err:
        decode_record(data[: len(data) // 2], REG, W.parsed, datums=True)
    assert err.value.reason == "corrupt_batch"
    # a block claiming one record more than it holds is corrupt; bytes left over after a block's
    # records are ignored, by fastavro and so here
    from cem.schemas import ocf
    c = ocf.scan(data)
    (count, block), = c.blocks
    with pytest.raises(DecodeError) as err:
        decode_record(ocf.assemble(c.schema_json, [(count + 1, block)], b"s" * 16), REG, W.parsed, datums=True)
    assert err.value.reason == "corrupt_batch"
    shorter = ocf.assemble(c.schema_json, [(count - 1, block)], b"s" * 16)
    assert decode_record(shorter, REG, W.parsed, datums=True).events == decode_record(shorter, REG, W.parsed).events


def test_batch_records_are_the_publishers_batches_per_raw_partition():
    """`batch_records` (the bench's pre-encoded traffic): every event once, in the raw partition
    of its customer key, each partition's events in their order, at most max_events a container."""
    reg = default_registry()
    events = list(touchpoints(1_000, customers=40, seed=3, start_ms=1_800_000_000_000))
    parts = {t: 3 for t in RAW_TOPICS.values()}
    records = batch_records(events, reg, parts, max_events=50)
    got: dict[tuple[str, int], list[str]] = {}
    for topic, partition, value in records:
        decoded = decode_record(value, reg, reg.latest("touchpoint").parsed).events
        assert decoded and len(decoded) <= 50
        got.setdefault((topic, partition), []).extend(e["event_id"] for e in decoded)
    want: dict[tuple[str, int], list[str]] = {}
    for e in events:
        topic = RAW_TOPICS[e["channel"]]
        want.setdefault((topic, partition_for(customer_key(e["identifiers"]).encode(), 3)), []).append(e["event_id"])
    assert got == want
