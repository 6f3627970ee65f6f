"""KeyedState (the customer stage's in-memory state with its own changelog) and a customer stage
restored from that changelog mid-stream: pure, no broker."""
from __future__ import annotations

import heapq
import json

import pytest
from hypothesis import given, settings, strategies as st

from cem.kafka.partitioning import partition_for
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch
from cem.sim.simulator import SimConfig, Simulator
from cem.streams.control import ControlMessage, Forward, encode as encode_control
from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
from cem.streams.state import KeyedState
from cem.streams.timers import BoundedTimers, HeapTimers, ScratchTimers

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


def test_values_beyond_the_live_bound_are_spilled_after_a_flush_and_come_back_on_get():
    log = Log()
    s = KeyedState(lambda k, v: json.dumps(v).encode(), lambda k, b: json.loads(b), log.load, log.write, max_live=2)
    s.open(0)
    for i in range(5):
        s.put(f"k{i}", {"n": i}, 0)
    assert s.live == 5  # nothing is evicted before it is written
    s.flush()
    assert 1 <= s.live <= 2 and len(s) == 5 and s.evicted == 5 - s.live  # down to 90 % of the bound
    assert s.get("k4") == {"n": 4} and s.reloaded == 0  # the most recently used stayed live
    assert [s.get(f"k{i}") for i in range(5)] == [{"n": i} for i in range(5)]
    assert s.reloaded == s.evicted
    s.flush()
    s.delete("k0", 0)
    s.flush()
    assert s.get("k0") is None and "k0" not in s  # a spilled copy of a deleted key stays dead
    s.put("k9", {"n": 9}, 1)
    s.flush()
    s.close(0)
    assert len(s) == 1 and s.get("k1") is None and s.get("k9") == {"n": 9}
    restored = sorted(s.open(0))  # a restore beyond the bound spills the rest undecoded
    assert restored == ["k1", "k2", "k3", "k4"] and s.live <= 3
    assert {k: s.get(k) for k in restored} == {f"k{i}": {"n": i} for i in range(1, 5)}


_KEYS = st.sampled_from([f"k{i}" for i in range(8)])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("put"), _KEYS, st.integers(0, 99)), st.tuples(st.just("get"), _KEYS),
                          st.tuples(st.just("delete"), _KEYS), st.tuples(st.just("flush"))), max_size=80),
       st.integers(1, 3))
def test_a_bounded_state_behaves_like_a_dict_and_holds_spilled_keys_only_in_the_spill(ops, max_live):
    """Keys in two partitions (by their digit), a live bound of 1-3: every answer as from a dict;
    a key is live or spilled, never both, and only live keys take memory beyond their value."""
    log = Log()
    s = KeyedState(lambda k, v: json.dumps(v).encode(), lambda k, b: json.loads(b), log.load, log.write,
                   max_live=max_live)
    s.open(0), s.open(1)
    model: dict[str, int] = {}
    part = lambda k: int(k[1:]) % 2  # noqa: E731
    for op in ops:
        if op[0] == "put":
            s.put(op[1], op[2], part(op[1]))
            model[op[1]] = op[2]
        elif op[0] == "get":
            assert s.get(op[1]) == model.get(op[1])
        elif op[0] == "delete":
            s.delete(op[1], part(op[1]))
            model.pop(op[1], None)
        else:
            s.flush()
            assert s.live <= max_live  # every value clean after a flush, so none kept beyond the bound
        assert len(s) == len(model) and set(s._owner) == set(s._values)
        assert all((k in s) == (k in model) for k in ("k0", "k1", "k5"))
    assert s.counts() == {p: n for p in (0, 1) if (n := sum(1 for k in model if part(k) == p))}
    assert sorted(s.keys(1)) == sorted(k for k in model if part(k) == 1)
    s.flush()
    s.close(1)  # forgets partition 1, live and spilled; a restore brings back what was flushed
    assert sorted(s.keys()) == sorted(k for k in model if part(k) == 0)
    s.open(1)
    assert {k: s.get(k) for k in model} == model


def test_live_values_stay_within_a_byte_budget_as_they_grow():
    """A count bound holds ever more memory as each value deepens (a customer's history); the
    byte bound keeps the live values' encoded size within it, with fewer live as they grow."""
    enc = lambda k, v: json.dumps(v).encode()  # noqa: E731
    log = Log()
    s = KeyedState(enc, lambda k, b: json.loads(b), log.load, log.write, max_live_bytes=400)
    s.open(0)
    live_counts = []
    for step in range(30):
        for i in range(10):
            v = s.get(f"k{i}") or []
            s.put(f"k{i}", v + [step], 0)
        s.flush()
        assert s.live_bytes <= 400
        assert s.live_bytes == sum(len(enc(k, v)) for k, v in s._values.items())  # exact, not estimated
        live_counts.append(s.live)
    assert live_counts[0] == 10 and live_counts[-1] < 5  # 10 short lists fit; long ones do not
    assert {f"k{i}": s.get(f"k{i}") for i in range(10)} == {f"k{i}": list(range(30)) for i in range(10)}
    s.delete("k0", 0)
    s.close(0)
    assert s.live_bytes == 0 and s.live == 0


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


def _stage(log: Log, rows: Rows, max_live: int = 0, max_live_bytes: int = 0, timers=None) -> CustomerStage:  # noqa: ANN001
    state = KeyedState(encode_state, decode_state, log.load, log.write, max_live=max_live,
                       max_live_bytes=max_live_bytes)
    return CustomerStage(state, default_registry(), rows, lambda key, body: None,
                         rules=load_rules(None), routes=load_routes(None), timers=timers)


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
    controls: list[tuple[str, ControlMessage]] = []
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
    forwarded = [m for k, m in controls if isinstance(m, Forward)]
    assert len(forwarded) == 1 and forwarded[0].winner == "cus-winner"
    kind, value = encode_control(forwarded[0])
    stage.process(value, "cem.touchpoints", 0, 2, [(CONTROL, kind.encode())])
    control({"control": "watermark", "wm": received["occurred_at"] + 6 * 86_400_000})
    stage.flush()
    fired = [m for m in rows.moments.values() if m["rule"] == "no_refund"]
    assert [(m["customer_id"], m["evidence"]) for m in fired] == [("cus-winner", [received["event_id"]])]


class PushEveryChange:
    """The timer heap before it was bounded: an entry pushed for every change of a customer, and
    every entry fired when due (a customer as often as it has entries)."""

    def __init__(self) -> None:
        self.heaps: dict[int, list[tuple[int, str]]] = {}

    def arm(self, partition: int, key: str, deadline: int) -> None:
        heapq.heappush(self.heaps.setdefault(partition, []), (deadline, key))

    def due(self, partition: int, watermark: int) -> list[tuple[int, str]]:
        heap, out = self.heaps.get(partition, []), []
        while heap and heap[0][0] <= watermark:
            out.append(heapq.heappop(heap))
        return out

    def hold(self, partition: int, items) -> None:  # noqa: ANN001
        for deadline, key in items:
            self.arm(partition, key, deadline)

    def drop(self, partition: int) -> None:
        self.heaps.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(h) for h in self.heaps.values())


def _same(rows: dict) -> dict:  # the wall-clock fields aside
    return {k: {f: x for f, x in v.items() if f not in ("detected_at", "version", "latency_ms")}
            for k, v in rows.items()}


def _both(records: list, timers=None) -> tuple[Rows, Rows, CustomerStage, CustomerStage]:  # noqa: ANN001
    """`records` through the reference (pushing every change) and through the real stage."""
    every, armed = Rows(), Rows()
    reference = CustomerStage(KeyedState(encode_state, decode_state), default_registry(), every,
                              lambda key, body: None, rules=load_rules(None), routes=load_routes(None),
                              timers=PushEveryChange())
    stage = _stage(Log(), armed, timers=timers)
    _run(reference, records, 0, len(records))
    _run(stage, records, 0, len(records))
    return every, armed, reference, stage


@pytest.mark.parametrize("timers", [HeapTimers, lambda: ScratchTimers(cache=7), lambda: BoundedTimers(limit=40)],
                         ids=["heap", "scratch", "bounded"])
def test_timers_armed_once_per_customer_fire_exactly_like_timers_pushed_on_every_change(timers):
    records = _records()
    every, armed, reference, stage = _both(records, timers())
    assert _same(armed.sessions) == _same(every.sessions) and len(every.sessions) > 100
    assert _same(armed.moments) == _same(every.moments) and every.moments


def test_a_customer_active_for_half_an_hour_holds_one_timer_entry_not_one_per_event():
    """Live traffic: 120 clicks 15 s apart, the watermark trailing by the allowed lateness. Every
    click moves the session's inactivity deadline later; pushing each one kept 120 heap entries
    for 30 minutes (at 5,000 events/s that is millions), arming keeps one. Same sessions."""
    template = next(e for e in Simulator(SimConfig(customers=20, days=1, seed=5)).run() if e["channel"] == "web")
    schema = default_registry().latest("touchpoint").parsed
    start = template["occurred_at"]
    records = []
    for i in range(120):
        at = start + i * 15_000
        ev = dict(template, event_id=f"click-{i}", occurred_at=at, received_at=at,
                  cem=(RESOLUTION, {"customer_id": "cus-1", "late": False, "processed_at": 0}))
        if ev["web"] is not None:
            ev["web"] = (ATTRIBUTE_RECORDS["web"], ev["web"])
        p = partition_for(b"cus-1", PARTS)
        records += [(p, encode_batch([ev], schema), None),
                    (p, json.dumps({"control": "watermark", "wm": at - 600_000}).encode(), [(CONTROL, b"watermark")])]
    every, armed, reference, stage = _both(records)
    assert stage._timers.entries() <= 2
    assert len(reference._timers) >= 60
    end = json.dumps({"control": "watermark", "wm": start + 10 * 86_400_000}).encode()
    for s_ in (reference, stage):
        s_.process(end, "cem.touchpoints", partition_for(b"cus-1", PARTS), len(records), [(CONTROL, b"watermark")])
        s_.flush()
    assert _same(armed.sessions) == _same(every.sessions)
    assert [v["status"] for v in armed.sessions.values()] == ["closed"]


def test_superseded_timer_entries_do_not_pile_up_over_weeks_of_sessions():
    """100 customers, one web visit a day for 30 days. Each visit pushes its session's deadline,
    earlier than the armed one (the journey's expiry a week ahead), which stays behind as a
    superseded entry for a week: ~7 per customer, growing with the sessions a window covers.
    The heap is rebuilt from the armed deadlines when it doubles; same sessions and moments."""
    template = next(e for e in Simulator(SimConfig(customers=20, days=1, seed=5)).run() if e["channel"] == "web")
    schema = default_registry().latest("touchpoint").parsed
    start = template["occurred_at"]
    records = []
    for day in range(30):
        by_part: dict[int, list] = {}
        for c in range(100):
            at = start + day * 86_400_000 + c * 1000
            ev = dict(template, event_id=f"visit-{c}-{day}", occurred_at=at, received_at=at,
                      cem=(RESOLUTION, {"customer_id": f"cus-{c}", "late": False, "processed_at": 0}))
            if ev["web"] is not None:
                ev["web"] = (ATTRIBUTE_RECORDS["web"], ev["web"])
            by_part.setdefault(partition_for(f"cus-{c}".encode(), PARTS), []).append(ev)
        wm = json.dumps({"control": "watermark", "wm": start + day * 86_400_000 + 12 * 3_600_000}).encode()
        for p, evs in sorted(by_part.items()):
            records += [(p, encode_batch(evs, schema), None), (p, wm, [(CONTROL, b"watermark")])]
    every, armed, reference, stage = _both(records)
    held = stage._timers.entries()
    assert held <= 2 * len(stage._timers) + 64 * PARTS
    assert len(reference._timers) > 3 * held  # what piling up looks like
    assert _same(armed.sessions) == _same(every.sessions) and len(every.sessions) == 3000
    _, scratch, _, on_disk = _both(records, ScratchTimers(cache=10))  # a cache of 10 for 100 customers
    assert len(on_disk._timers) == len(stage._timers) == 100
    assert _same(scratch.sessions) == _same(every.sessions)


def test_a_stage_whose_memory_holds_few_customers_ends_where_an_unbounded_one_does():
    records = _records()
    whole, bounded = Rows(), Rows()
    _run(_stage(Log(), whole), records, 0, len(records))
    small = _stage(Log(), bounded, max_live=20, timers=ScratchTimers(cache=20))  # 150 customers, 20 live
    _run(small, records, 0, len(records))
    assert small.table.evicted > 100 and small.table.reloaded > 100
    assert _same(bounded.sessions) == _same(whole.sessions) and len(whole.sessions) > 100
    assert _same(bounded.moments) == _same(whole.moments) and whole.moments
    by_bytes = Rows()
    budget = _stage(Log(), by_bytes, max_live_bytes=20_000)  # ~10 timelines' worth
    _run(budget, records, 0, len(records))
    budget.flush()
    assert budget.table.evicted > 100 and budget.table.live_bytes <= 20_000
    assert _same(by_bytes.sessions) == _same(whole.sessions)
    assert _same(by_bytes.moments) == _same(whole.moments)
