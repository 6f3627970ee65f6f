import io
from collections import Counter

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.schemas.serde import DecodeError, container_schema_json, encode_batch
from cem.schemas import ocf
from cem.sinks.batch import Insert, PartitionBatch, build_inserts, cut_id, plan_cut, split_insert, split_rows

W = default_registry().latest("touchpoint")
COLUMNS = frozenset(f["name"] for f in W.raw["fields"])


def new_batch():
    return PartitionBatch("cem.touchpoints", 2, W.parsed, container_schema_json(W.parsed))


def ids(data: bytes) -> list[str]:
    return [e["event_id"] for e in fastavro.reader(io.BytesIO(data))]


def test_blocks_and_single_events_merge_into_one_container_in_offset_order():
    events = list(touchpoints(1200, start_ms=1_790_000_000_000))
    b = new_batch()
    b.add_container(10, encode_batch(events[:500], W.parsed))
    b.add_event(11, events[500])
    b.add_container(12, encode_batch(events[501:], W.parsed))
    [ins] = build_inserts([b], COLUMNS)
    assert ins.rows == 1200 and b.first == 10 and b.last == 12
    got = ids(ins.data)
    assert sorted(got) == sorted(e["event_id"] for e in events)
    assert ins.token == "cem.touchpoints:2:10-12:0"


def test_same_offsets_give_the_same_token_and_bytes():
    events = list(touchpoints(100, start_ms=1_790_000_000_000))
    builds = []
    for _ in range(2):
        b = new_batch()
        b.add_container(5, encode_batch(events, W.parsed))
        builds.append(build_inserts([b], COLUMNS))
    assert builds[0] == builds[1]


def test_corrupt_containers_are_refused_and_add_nothing():
    data = encode_batch(list(touchpoints(50, start_ms=1_790_000_000_000)), W.parsed)
    sync = data[-16:]
    wrong_sync = data[:-16] + bytes(16)
    assert sync != bytes(16)
    b = new_batch()
    for bad in (data[:-40], wrong_sync):
        with pytest.raises(DecodeError) as err:
            b.add_container(1, bad)
        assert err.value.reason == "corrupt_batch"
    assert b.rows == 0 and build_inserts([b], COLUMNS) == []


def test_skipped_offsets_extend_the_range_without_rows():
    b = new_batch()
    b.skip(3)
    b.add_container(4, encode_batch(list(touchpoints(3, start_ms=1_790_000_000_000)), W.parsed))
    [ins] = build_inserts([b], COLUMNS)
    assert ins.token.endswith(":3-4:0") and ins.rows == 3


def test_a_cut_over_several_partitions_is_one_insert_whatever_the_order_of_its_batches():
    events = list(touchpoints(300, start_ms=1_790_000_000_000))

    def cut():
        a = PartitionBatch("cem.touchpoints", 0, W.parsed, container_schema_json(W.parsed))
        b = PartitionBatch("cem.touchpoints", 3, W.parsed, container_schema_json(W.parsed))
        a.add_container(7, encode_batch(events[:100], W.parsed))
        b.skip(40)
        b.add_container(41, encode_batch(events[100:], W.parsed))
        return a, b

    a, b = cut()
    [ins] = build_inserts([b, a], COLUMNS)
    assert ins.token == "cem.touchpoints:0:7-7|cem.touchpoints:3:40-41:0"
    assert ins.ranges == (("cem.touchpoints", 0, 7, 7), ("cem.touchpoints", 3, 40, 41))
    assert ins.rows == 300 and sorted(ids(ins.data)) == sorted(e["event_id"] for e in events)
    again = cut()
    assert build_inserts(list(again), COLUMNS) == [ins]  # a replay re-forms the same bytes
    assert cut_id([a, b]) == cut_id(list(again)) != cut_id([a])


def test_a_large_cut_is_split_by_partition_and_a_small_one_stays_one_insert():
    def batch(p, rows):
        b = PartitionBatch("cem.touchpoints", p, W.parsed, container_schema_json(W.parsed))
        b.add_container(0, encode_batch(list(touchpoints(rows, start_ms=1_790_000_000_000)), W.parsed))
        return b
    batches = [batch(0, 60), batch(1, 50), batch(2, 40), batch(3, 30)]
    assert split_rows(batches, max_rows=1000, parts=2) == [batches]  # small: one insert per table
    halves = split_rows(batches, max_rows=100, parts=2)
    assert sorted(sum(b.rows for b in h) for h in halves) == [90, 90]
    assert sorted(b.partition for h in halves for b in h) == [0, 1, 2, 3]
    assert len(split_rows(batches, max_rows=10, parts=8)) == 4  # never more inserts than partitions


ENCODED = [encode_batch(list(touchpoints(n, seed=n, start_ms=1_790_000_000_000)), W.parsed) for n in range(81)]


def partition_batches(sizes: list[int]) -> list[PartitionBatch]:
    out = []
    for p, rows in enumerate(sizes):
        b = PartitionBatch("cem.touchpoints", p, W.parsed, container_schema_json(W.parsed))
        b.skip(10 * p)
        if rows:
            b.add_container(10 * p + 1, ENCODED[rows])
        out.append(b)
    return out


def test_a_crashed_group_larger_than_max_rows_is_replayed_as_one_insert_not_split_again():
    # the CI failure this fixes: a cut of 4 partitions split into two groups of 120 rows each;
    # after a SIGKILL, a group re-formed and split again became two inserts with new tokens and
    # its 120 rows landed twice
    columns = {"touchpoints": COLUMNS}
    [first, second] = plan_cut({"touchpoints": partition_batches([60, 60, 60, 60])}, columns,
                               max_rows=100, parts=2)
    assert [sum(i.rows for i in p.inserts) for p in (first, second)] == [120, 120]
    group = [b for b in partition_batches([60, 60, 60, 60])
             if (b.topic, b.partition, b.first) in {m[:3] for m in first.marks}]
    assert len(plan_cut({"touchpoints": group}, columns, max_rows=100, parts=2)) == 2  # the hazard
    assert plan_cut({"touchpoints": group}, columns, max_rows=100, parts=2, replay=True) == [first]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 80), min_size=1, max_size=6),
       max_rows=st.integers(1, 200), parts=st.integers(1, 4))
def test_every_planned_group_replays_with_the_same_tokens_bytes_and_marks(sizes, max_rows, parts):
    columns = {"touchpoints": COLUMNS}
    planned = plan_cut({"touchpoints": partition_batches(sizes)}, columns, max_rows=max_rows, parts=parts)
    assert sum(i.rows for p in planned for i in p.inserts) == sum(sizes)
    assert len({i.token for p in planned for i in p.inserts}) == sum(len(p.inserts) for p in planned)
    for p in planned:
        marked = {(topic, partition, first) for topic, partition, first, _ in p.marks}
        group = [b for b in partition_batches(sizes) if (b.topic, b.partition, b.first) in marked]
        assert plan_cut({"touchpoints": group}, columns, max_rows=max_rows, parts=parts, replay=True) == [p]


def leaves(ins):
    """Halve `ins` until single rows: what landing does when every part is refused."""
    halves = split_insert(ins)
    if not halves:
        return [ins]
    return [leaf for half in halves for leaf in leaves(half)]


def test_a_refused_insert_halves_down_to_single_rows_keeping_every_row_once():
    batches = partition_batches([7, 0, 5, 1])
    b = batches[0]
    b.add_container(500, ENCODED[3])  # several blocks in one partition batch
    [ins] = build_inserts(batches, COLUMNS)
    halves = split_insert(ins)
    assert [h.token for h in halves] == [ins.token + "/0", ins.token + "/1"]
    assert sum(h.rows for h in halves) == ins.rows == 16 and all(h.rows for h in halves)
    assert split_insert(ins) == halves  # deterministic: a replay halves the same way
    parts = leaves(ins)
    assert all(p.rows == 1 for p in parts) and len({p.token for p in parts}) == 16
    assert sorted(i for p in parts for i in ids(p.data)) == sorted(ids(ins.data))
    # every row knows the record it came from (a dead letter's source headers)
    record_ids = {(0, 1): ids(ENCODED[7]), (0, 500): ids(ENCODED[3]), (2, 21): ids(ENCODED[5]),
                  (3, 31): ids(ENCODED[1])}
    for p in parts:
        [(topic, partition, offset, rows)] = p.sources
        assert rows == 1 and ids(p.data)[0] in record_ids[(partition, offset)]
    assert Counter(p.sources[0][1:3] for p in parts) == {(0, 1): 7, (0, 500): 3, (2, 21): 5, (3, 31): 1}


def test_one_block_is_halved_by_its_records_and_json_rows_by_line():
    [ins] = build_inserts(partition_batches([9]), COLUMNS)
    assert [n for n, _ in ocf.scan(ins.data).blocks] == [9]
    assert [h.rows for h in split_insert(ins)] == [4, 5]
    assert sorted(i for p in leaves(ins) for i in ids(p.data)) == sorted(ids(ins.data))
    b = PartitionBatch("cem.sessions", 0, W.parsed, container_schema_json(W.parsed))
    b.add_json(3, b'{"a":1}\n{"a":2}')
    b.add_json(4, b'{"a":3}')
    [rows] = build_inserts([b], frozenset())
    assert [h.data for h in split_insert(rows)] == [b'{"a":1}', b'{"a":2}\n{"a":3}']
    assert [p.data for p in leaves(rows)] == [b'{"a":1}', b'{"a":2}', b'{"a":3}']
    assert [p.sources for p in leaves(rows)] == [(("cem.sessions", 0, 3, 1),), (("cem.sessions", 0, 3, 1),),
                                                 (("cem.sessions", 0, 4, 1),)]


def test_a_single_row_or_a_block_fastavro_cannot_read_is_not_halved():
    [one] = build_inserts(partition_batches([1]), COLUMNS)
    assert split_insert(one) == []
    garbage = ocf.assemble(container_schema_json(W.parsed), [(3, b"\xff" * 40)], b"m" * 16)
    assert split_insert(Insert("t", None, garbage, 3, "Avro", (("cem.touchpoints", 0, 1, 1),))) == []
