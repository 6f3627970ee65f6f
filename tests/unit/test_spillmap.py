"""SpillMap (the identity graph's bounded maps): behaves like a dict under any sequence of the
operations the graph uses, holds at most `max_live` live entries, keeps in-place changes of a
value it evicts, and a graph built on it decides exactly like one built on dicts."""
from __future__ import annotations

import json
import threading

from hypothesis import given, settings, strategies as st

from cem.identity import IdentityGraph, LookupGraph
from cem.streams.identity_log import bounded_graph
from cem.streams.spillmap import SpillMap
from tests.unit.test_identity import link_events

keys = st.sampled_from([f"k{i}" for i in range(30)])
ops = st.lists(st.tuples(st.sampled_from(["set", "get", "pop", "setdefault", "in", "del"]), keys,
                         st.integers(0, 1000)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 12))
def test_any_sequence_of_operations_matches_a_dict(sequence, max_live):
    m: SpillMap[int] = SpillMap(max_live)
    model: dict[str, int] = {}
    for op, key, value in sequence:
        if op == "set":
            m[key] = value
            model[key] = value
        elif op == "get":
            assert m.get(key) == model.get(key)
        elif op == "pop":
            assert m.pop(key, None) == model.pop(key, None)
        elif op == "setdefault":
            assert m.setdefault(key, value) == model.setdefault(key, value)
        elif op == "in":
            assert (key in m) == (key in model)
        elif key in model:
            del m[key]
            del model[key]
        assert m.live <= max_live
        assert len(m) == len(model)
    assert dict(m.items()) == model
    assert sorted(m.keys()) == sorted(model)


def test_a_member_set_changed_in_place_survives_its_eviction_and_comes_back():
    m = SpillMap(10, lambda s: json.dumps(sorted(s)), lambda b: set(json.loads(b)))
    m.setdefault("p0", set()).add("email_hash:a")
    m.get("p0").add("device_id:b")  # changed in place after it was read
    for i in range(1, 30):  # pushes p0 out (first in, first out)
        m[f"p{i}"] = {f"x{i}"}
    assert m.live <= 10 and m.evicted >= 20
    assert m.get("p0") == {"email_hash:a", "device_id:b"} and m.reloaded == 1
    m.get("p0").discard("device_id:b")
    for i in range(30, 60):
        m[f"p{i}"] = set()
    assert m["p0"] == {"email_hash:a"} and len(m) == 60


def test_a_reader_thread_always_finds_what_the_writer_has_published():
    m: SpillMap[str] = SpillMap(50)
    published = [0]
    wrong: list[tuple[int, object]] = []
    done = threading.Event()

    def read() -> None:
        n = 0
        while not done.is_set() or n < published[0]:
            upto = published[0]
            for i in range(max(0, upto - 200), upto):
                if m.get(f"id{i}") != f"p{i}":
                    wrong.append((i, m.get(f"id{i}")))
            n = upto

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(5000):
        m[f"id{i}"] = f"p{i}"
        published[0] = i + 1
    done.set()
    reader.join()
    assert not wrong and len(m) == 5000 and m.evicted > 4000


@settings(max_examples=100, deadline=None)
@given(link_events())
def test_a_graph_on_small_spill_maps_decides_exactly_like_one_on_dicts(events):
    plain, spilled = IdentityGraph(), bounded_graph(IdentityGraph, 3)
    lookups = bounded_graph(LookupGraph, 2)
    for t, (eid, ids) in enumerate(events):
        a, b = plain.resolve(eid, ids, t), spilled.resolve(eid, ids, t)
        assert a == b
        for m in a.mappings:
            lookups.apply(m.identifier, m.profile)
    assert dict(spilled.owner.items()) == plain.owner == dict(lookups.owner.items())
    assert {p: s for p, s in spilled.members.items() if s} == {p: s for p, s in plain.members.items() if s}
    assert dict(spilled.first_seen.items()) == plain.first_seen
    assert [lookups.lookup(ids) for _, ids in events] == [plain.lookup(ids) for _, ids in events]


def test_looking_up_keys_never_spilled_does_not_query_the_spill():
    m: SpillMap[str] = SpillMap(100)
    for i in range(1000):
        m[f"known{i}"] = "p"
    assert m.evicted >= 900
    queries: list[str] = []
    m._db.set_trace_callback(queries.append)
    assert all(m.get(f"new{i}") is None and f"new{i}" not in m for i in range(10_000))
    assert len(queries) <= 50  # the filter's false positives only (~1000 / 2^25 each)
    assert m.get("known3") == "p" and queries  # a spilled key is still found
