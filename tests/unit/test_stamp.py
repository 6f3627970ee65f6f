"""Stamping a resolution into an encoded touchpoint gives exactly the bytes of encoding it."""
from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given, settings, strategies as st

from cem.events import CHANNELS
from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.schemas.stamp import Stamper
from cem.streams.ingest import RESOLUTION, branch_tagged

W = default_registry().latest("touchpoint").parsed
STAMPER = Stamper.for_schema(W)


def encode(ev: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, W, ev)
    return buf.getvalue()


def decode(datum: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(datum), W, None)


def test_the_touchpoint_schema_is_stampable():
    assert STAMPER is not None


@given(channel=st.sampled_from(CHANNELS), seed=st.integers(0, 10_000),
       name=st.one_of(st.none(), st.text(max_size=200)), customer=st.text(min_size=1, max_size=90),
       late=st.booleans(), at=st.integers(0, 1 << 62))
@settings(max_examples=300, deadline=None)
def test_stamp_equals_encoding_the_event_with_its_resolution(channel, seed, name, customer, late, at):
    ev = next(touchpoints(1, seed=seed, start_ms=1_790_000_000_000, channels=(channel,)))
    ev["event_name"] = name
    event = decode(encode(ev))  # as ingest sees it: decoded from the bytes it forwards
    datum = encode(event)
    stamped = STAMPER.stamp(datum, event, customer, late, at)
    if (event["phone"] or {}).get("resolved") is not None:
        assert stamped is None  # a boolean: re-encoded (see the test below)
        return
    resolution = {"customer_id": customer, "late": late, "processed_at": at}
    expected = dict(branch_tagged(dict(event)), cem=(RESOLUTION, resolution))
    assert stamped == encode(expected)
    assert decode(stamped) == dict(event, cem=resolution)


def test_bytes_a_decoder_reads_but_clickhouse_refuses_or_that_hide_the_field_are_re_encoded():
    call = next(e for e in touchpoints(200, start_ms=1_790_000_000_000, channels=("phone",))
                if e["phone"] and e["phone"].get("resolved") is not None)
    event = decode(encode(call))
    # a boolean byte of 5 reads as true, but ClickHouse refuses it: never passed through
    assert STAMPER.stamp(encode(event), event, "c-1", False, 5) is None
    event = decode(encode(next(touchpoints(1, start_ms=1_790_000_000_000, channels=("web",)))))
    event["event_name"] = None
    datum = encode(event)
    assert datum[-2:] == b"\x00\x00"  # cem null, event_name null
    longer = datum[:-2] + b"\x80\x00\x00"  # cem's null branch written in two bytes: still null
    assert decode(longer) == event
    assert STAMPER.stamp(longer, event, "c-1", False, 5) is None  # splicing there would corrupt it
    tail = datum[:-1] + b"\x80\x00"  # event_name's null branch in two bytes
    assert decode(tail) == event and STAMPER.stamp(tail, event, "c-1", False, 5) is None


def test_one_stamper_encodes_each_processing_time_it_is_given():
    event = decode(encode(next(touchpoints(1, start_ms=1_790_000_000_000))))
    datum = encode(event)
    first = STAMPER.stamp(datum, event, "c-1", False, 1_000)
    second = STAMPER.stamp(datum, event, "c-1", False, 1_000_000_000_000)
    assert decode(first)["cem"]["processed_at"] == 1_000
    assert decode(second)["cem"]["processed_at"] == 1_000_000_000_000


def test_an_event_already_stamped_or_bytes_of_another_layout_are_left_to_the_encoder():
    event = decode(encode(next(touchpoints(1, start_ms=1_790_000_000_000))))
    stamped = STAMPER.stamp(encode(event), event, "c-1", False, 5)
    again = decode(stamped)
    assert STAMPER.stamp(stamped, again, "c-2", False, 6) is None  # cem already set
    # the decoded event says event_name is null, but the bytes end in a set string
    assert STAMPER.stamp(encode(dict(event, event_name="x")), event, "c-1", False, 5) is None


@pytest.mark.parametrize("fields", [
    [{"name": "event_id", "type": "string"}],  # no cem field
    [{"name": "cem", "type": ["null", {"type": "record", "name": "R", "fields": [
        {"name": "customer_id", "type": "string"}, {"name": "late", "type": "boolean"},
        {"name": "processed_at", "type": "long"}]}]},
     {"name": "count", "type": ["null", "long"]}],  # a trailing field whose size the stamper cannot tell
])
def test_schemas_the_stamper_cannot_serve_get_none(fields):
    schema = fastavro.parse_schema({"type": "record", "name": "T", "namespace": "x", "fields": fields})
    assert Stamper.for_schema(schema) is None
