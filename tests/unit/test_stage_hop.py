"""The customer stage's internal hop (`cem.schemas.stage`, CEM_STAGE_HOP=marshal): the stage fed
the same simulated traffic as Avro containers (the former hop) and as internal rows publishes
exactly the same rows; a record that is not a stage record is a DecodeError and dead-lettered.
Pure, no broker (the end-to-end comparison on stored rows is tests/e2e/test_scale_out.py)."""
from __future__ import annotations

import json
import marshal
import sys

import pytest

from cem.kafka.partitioning import partition_for
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.schemas.serde import DecodeError, encode_batch
from cem.schemas.stage import MAGIC, decode_rows, encode_rows, stage_row
from cem.sessions import touch_of
from cem.sim.simulator import SimConfig, Simulator
from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
from cem.streams.ingest import RESOLUTION, branch_tagged
from cem.streams.state import KeyedState
from tests.support.recording import Rows

PARTS = 3


def _traffic() -> tuple[list, list]:
    """Simulator traffic as per-partition records, each group followed by a watermark: once as
    Avro containers (what cem.touchpoints carries), once as internal stage records."""
    sim = Simulator(SimConfig(customers=120, days=3, seed=5, out_of_order_rate=0.05))
    events = list(sim.run())
    customer = {t["event_id"]: t["customer"] for t in sim.truth.events}
    schema = default_registry().latest("touchpoint").parsed
    avro, internal = [], []
    for i in range(0, len(events), 150):
        chunk = events[i:i + 150]
        by_part: dict[int, list] = {}
        for ev in chunk:
            c = customer[ev["event_id"]]
            ev = branch_tagged(dict(ev, cem=(RESOLUTION, {"customer_id": c, "late": False, "processed_at": 0})))
            by_part.setdefault(partition_for(c.encode(), PARTS), []).append((c, ev))
        wm = max(e["received_at"] for e in chunk) - 600_000
        for p, evs in sorted(by_part.items()):
            avro.append((p, encode_batch([e for _, e in evs], schema), None))
            internal.append((p, encode_rows([stage_row(e, c) for c, e in evs]), None))
        for p in range(PARTS):
            mark = (p, json.dumps({"control": "watermark", "wm": wm}).encode(), [(CONTROL, b"watermark")])
            avro.append(mark)
            internal.append(mark)
    return avro, internal


class Dead:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int]] = []

    def send(self, value, reason, detail, *, topic, partition, offset, batch_index=-1, key=None,  # noqa: ANN001
             source_headers=None):
        self.sent.append((reason, topic, offset))


def _stage(rows: Rows, dead: Dead | None = None) -> CustomerStage:
    log: dict = {}
    state = KeyedState(encode_state, decode_state, lambda p: iter(()), lambda p, k, v: log.__setitem__(k, v))
    return CustomerStage(state, default_registry(), rows, lambda key, body: None, clock=lambda: 1_800_000_000.0,
                         rules=load_rules(None), routes=load_routes(None), dead=dead)


def test_the_internal_hop_gives_the_same_rows_as_the_avro_hop():
    avro, internal = _traffic()
    out = {}
    for name, records, topic in (("avro", avro, "cem.touchpoints"), ("internal", internal, "cem.stage")):
        rows = Rows()
        stage = _stage(rows)
        for i, (p, value, headers) in enumerate(records):
            stage.process(value, topic, p, i, headers)
            if i % 7 == 6:
                stage.flush()
        out[name] = rows.rows
    kinds = {t for t, _, _ in out["avro"]}
    assert {"cem.sessions", "cem.journeys", "cem.moments", "cem.alerts", "cem.customers"} <= kinds
    assert out["internal"] == out["avro"]  # every row, in order, field for field


def test_a_stage_row_is_what_the_stage_reads_of_the_avro_event():
    sim = Simulator(SimConfig(customers=30, days=2, seed=3))
    events = [branch_tagged(dict(ev)) for ev in sim.run()]
    got = decode_rows(encode_rows([stage_row(ev, "p:1") for ev in events]))
    assert [(c, t, r) for c, t, r in got] == [("p:1", touch_of(ev), ev["received_at"]) for ev in events]


@pytest.mark.parametrize("value,reason", [
    (b"", "undecodable"),
    (b"Obj\x01not ours", "undecodable"),
    (MAGIC + b"\xff\x00garbage", "undecodable"),
    (MAGIC + marshal.dumps({"a": 1}), "undecodable"),
    (MAGIC + marshal.dumps([("c", "not an int", "e", "t", "web", "s", None, {}, 1)]), "undecodable"),
    (MAGIC + marshal.dumps([("c", 1, "e", "t", "web", "s", None, {})]), "undecodable"),
    (MAGIC + marshal.dumps([(compile("1", "x", "eval"),) * 9]), "undecodable"),
    (b"cemS" + bytes([sys.version_info[1] + 1]) + marshal.dumps([]), "stage_version"),
])
def test_a_record_that_is_not_a_stage_record_is_a_decode_error(value, reason):
    with pytest.raises(DecodeError) as err:
        decode_rows(value)
    assert err.value.reason == reason


def test_an_undecodable_internal_record_is_dead_lettered_and_the_stage_goes_on():
    avro, internal = _traffic()
    rows, dead = Rows(), Dead()
    stage = _stage(rows, dead)
    stage.process(MAGIC + b"\x00broken", "cem.stage", 0, 41, None)
    stage.process(b"Obj\x01broken", "cem.touchpoints", 0, 42, None)  # landing dead-letters that one
    for i, (p, value, headers) in enumerate(internal[:20]):
        stage.process(value, "cem.stage", p, 100 + i, headers)
    stage.flush()
    assert dead.sent == [("undecodable", "cem.stage", 41)]
    assert any(t == "cem.sessions" for t, _, _ in rows.rows)
