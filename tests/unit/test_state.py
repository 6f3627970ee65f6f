"""KeyedState (the customer stage's in-memory state with its own changelog) and a customer stage
restored from that changelog mid-stream: pure, no broker."""
from __future__ import annotations

import json

from cem.connectors.partitioning import partition_for
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch
from cem.simulator import SimConfig, Simulator
from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
from cem.streams.state import KeyedState

PARTS = 2


class Log:
    """A changelog: every write appended, replayed per partition like a compacted topic."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes, bytes | None]] = []

    def write(self, p: int, key: bytes, value: bytes | None) -> None:
        self.records.append((p, key, value))

    def load(self, p: int) -> list[tuple[bytes, bytes | None]]:
        return [(k, v) for q, k, v in self.records if q == p]


def _json_state(log: Log) -> KeyedState:
    return KeyedState(lambda k, v: json.dumps(v).encode(), lambda k, b: json.loads(b), log.load, log.write)


def test_flush_writes_each_dirty_key_once_with_its_latest_value():
    log = Log()
    s = _json_state(log)
    s.open(0)
    s.put("a", 1, 0)
    s.put("a", 2, 0)
    s.put("b", 3, 1)
    s.delete("b", 1)
    assert s.flush() == 2
    assert sorted(log.records) == [(0, b"a", b"2"), (1, b"b", None)]
    assert s.flush() == 0  # nothing changed since


def test_open_restores_the_latest_value_per_key_and_close_forgets_the_partition():
    log = Log()
    log.records = [(0, b"a", b"1"), (0, b"a", b"5"), (0, b"gone", b"1"), (0, b"gone", None), (1, b"x", b"9")]
    s = _json_state(log)
    assert sorted(s.open(0)) == ["a"]
    assert s.get("a") == 5 and s.get("gone") is None and s.get("x") is None
    assert s.open(0) == []  # already open: nothing restored twice
    s.open(1)
    s.put("new", 7, 0)
    s.close(0)
    assert s.get("a") is None and s.get("new") is None and s.get("x") == 9
    assert s.flush() == 0  # a revoked partition's unflushed changes are not written


class Rows:
    def __init__(self) -> None:
        self.sessions: dict[str, dict] = {}
        self.moments: dict[str, dict] = {}

    def publish(self, topic: str, key: str, row: dict) -> None:
        if topic == "cem.sessions":
            self.sessions[row["session_id"]] = row
        elif topic == "cem.moments":
            self.moments[row["moment_id"]] = row

    def flush(self) -> None:
        pass


def _records() -> list[tuple[int, bytes, list | None]]:
    """Simulator traffic as touchpoint batch records per partition, each followed by a watermark."""
    sim = Simulator(SimConfig(customers=150, days=3, seed=7, out_of_order_rate=0.05))
    events = list(sim.run())
    customer = {t["event_id"]: t["customer"] for t in sim.truth.events}
    schema = default_registry().latest("touchpoint").parsed
    out = []
    for i in range(0, len(events), 200):
        chunk = events[i:i + 200]
        by_part: dict[int, list] = {}
        for ev in chunk:
            c = customer[ev["event_id"]]
            ev = dict(ev, cem=(RESOLUTION, {"customer_id": c, "late": False, "processed_at": 0}))
            if ev.get(ev["channel"]) is not None:
                ev[ev["channel"]] = (ATTRIBUTE_RECORDS[ev["channel"]], ev[ev["channel"]])
            by_part.setdefault(partition_for(c.encode(), PARTS), []).append(ev)
        wm = max(e["received_at"] for e in chunk) - 600_000
        for p, evs in sorted(by_part.items()):
            out.append((p, encode_batch(evs, schema), None))
        for p in range(PARTS):
            out.append((p, json.dumps({"control": "watermark", "wm": wm}).encode(), [(CONTROL, b"watermark")]))
    return out


def _stage(log: Log, rows: Rows) -> CustomerStage:
    state = KeyedState(encode_state, decode_state, log.load, log.write)
    return CustomerStage(state, default_registry(), rows, lambda key, body: None,
                         rules=load_rules(None), routes=load_routes(None))


def _run(stage: CustomerStage, records: list, start: int, stop: int) -> None:
    for i in range(start, stop):
        p, value, headers = records[i]
        stage.process(value, "cem.touchpoints", p, i, headers)
        if i % 10 == 9:
            stage.flush()


def test_a_stage_restored_from_its_changelog_ends_where_an_uninterrupted_one_does():
    records = _records()
    whole = Rows()
    _run(_stage(Log(), whole), records, 0, len(records))

    log, rows = Log(), Rows()
    crash = len(records) // 2 + 3           # mid-group: the last flush was at the previous 10
    _run(_stage(log, rows), records, 0, crash)
    resume = crash - crash % 10             # committed offsets: the records after the last flush replay
    restarted = _stage(log, rows)         # a new process: nothing in memory but the changelog
    _run(restarted, records, resume, len(records))

    final = {k: v for k, v in whole.sessions.items() if v["status"] == "closed"}
    assert len(final) > 100
    got = {k: v for k, v in rows.sessions.items() if v["status"] == "closed"}
    assert {k: v["event_ids"] for k, v in got.items()} == {k: v["event_ids"] for k, v in final.items()}
    assert set(rows.moments) == set(whole.moments) and whole.moments


def test_a_touch_forwarded_after_a_merge_meets_the_winners_rules():
    """A stale replica resolved a return_received to a merged-away profile: the loser's partition
    forwards it to the winner, where it must arm the absence rule (no_refund) like any touch."""
    sim = Simulator(SimConfig(customers=400, days=7, seed=3))
    received = next(e for e in sim.run() if e["event_type"] == "return_received")
    controls: list[tuple[str, dict]] = []
    rows = Rows()
    stage = CustomerStage(KeyedState(encode_state, decode_state, Log().load, Log().write), default_registry(), rows,
                          lambda key, body: controls.append((key, body)), rules=load_rules(None),
                          routes=load_routes(None))

    def control(body: dict) -> None:
        stage.process(json.dumps(body).encode(), "cem.touchpoints", 0, 0, [(CONTROL, body["control"].encode())])

    control({"control": "merge", "merge_id": "m1", "winner": "cus-winner", "loser": "cus-loser", "at": 0})
    ev = dict(received, cem=(RESOLUTION, {"customer_id": "cus-loser", "late": False, "processed_at": 0}))
    ev["returns"] = (ATTRIBUTE_RECORDS["returns"], ev["returns"])
    stage.process(encode_batch([ev], default_registry().latest("touchpoint").parsed), "cem.touchpoints", 0, 1, None)
    forwarded = [b for k, b in controls if b["control"] == "transfer" and b["loser"] == ""]
    assert len(forwarded) == 1 and forwarded[0]["winner"] == "cus-winner"
    control(forwarded[0])
    control({"control": "watermark", "wm": received["occurred_at"] + 6 * 86_400_000})
    stage.flush()
    fired = [m for m in rows.moments.values() if m["rule"] == "no_refund"]
    assert [(m["customer_id"], m["evidence"]) for m in fired] == [("cus-winner", [received["event_id"]])]
