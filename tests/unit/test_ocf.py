import io

import fastavro
import pytest

from cem.sim.generator import touchpoints
from cem.schemas.ocf import CorruptContainer, assemble, scan
from cem.schemas.registry import default_registry
from cem.schemas.serde import container_schema_json, encode_batch

W = default_registry().latest("touchpoint")


def test_scan_then_assemble_round_trips_through_fastavro():
    a = list(touchpoints(120, seed=1, start_ms=1_790_000_000_000))
    b = list(touchpoints(80, seed=2, start_ms=1_790_000_000_000))
    ca, cb = scan(encode_batch(a, W.parsed)), scan(encode_batch(b, W.parsed))
    assert ca.schema_json == container_schema_json(W.parsed) and ca.codec == "null"
    assert ca.records == 120 and cb.records == 80
    merged = assemble(ca.schema_json, ca.blocks + cb.blocks, b"S" * 16)
    got = [e["event_id"] for e in fastavro.reader(io.BytesIO(merged))]
    assert got == [e["event_id"] for e in a + b]


def test_assemble_is_deterministic_for_a_sync_marker():
    c = scan(encode_batch(list(touchpoints(10, start_ms=1_790_000_000_000)), W.parsed))
    assert assemble(c.schema_json, c.blocks, b"x" * 16) == assemble(c.schema_json, c.blocks, b"x" * 16)


@pytest.mark.parametrize("mangle", [
    lambda d: d[:-30],                       # truncated block
    lambda d: d[:-16] + bytes(16),           # wrong sync marker
    lambda d: d[:20],                        # truncated header
    lambda d: b"Obj\x02" + d[4:],            # wrong magic
])
def test_corruption_is_detected(mangle):
    data = encode_batch(list(touchpoints(30, start_ms=1_790_000_000_000)), W.parsed)
    with pytest.raises(CorruptContainer):
        scan(mangle(data))
