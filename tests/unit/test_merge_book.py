"""Merge bookkeeping in its own key space (streams/merge_book.py): a changelog written when the
bookkeeping lived among the timelines (`__alias__:`/`__await__:` keys) restores into the new
tables exactly, is migrated by the next flush, and the stage carries on as the old one did."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from cem.kafka.partitioning import partition_for
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch
from cem.sim.simulator import SimConfig, Simulator
from cem.streams.control import CONTROL_HEADER, AlertAction, Handover, encode
from cem.streams.customers import CustomerStage, decode_state, encode_state
from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
from cem.streams.merge_book import MergeBook, decode_book, encode_book
from cem.streams.state import KeyedState
from cem.timeline import Timeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state_v1"
PARTS = 2


class Log:
    def __init__(self, records: list[tuple[int, bytes, bytes | None]] | None = None) -> None:
        self.records = list(records or [])

    def write(self, p: int, key: bytes, value: bytes | None) -> None:
        self.records.append((p, key, value))

    def load(self, p: int) -> list[tuple[bytes, bytes | None]]:
        return [(k, v) for q, k, v in self.records if q == p]

    def latest(self) -> dict[bytes, bytes | None]:
        return {k: v for _, k, v in self.records}


class Rows:
    def __init__(self) -> None:
        self.rows: list = []

    def publish(self, topic: str, key: str, row: dict) -> None:
        self.rows.append([topic, key, row])

    def flush(self) -> None:
        pass


def _old_log() -> tuple[dict, Log]:
    fx = json.loads((FIXTURES / "changelog.json").read_text())
    return fx, Log([(p, k.encode(), None if v is None else v.encode()) for p, k, v in fx["records"]])


def _stage(log: Log, books: Log, rows: Rows, controls: list, max_live: int = 0) -> CustomerStage:
    return CustomerStage(KeyedState(encode_state, decode_state, log.load, log.write, max_live=max_live),
                         default_registry(), rows,
                         lambda key, m: controls.append((key, m)), clock=lambda: 1_800_000_000.0,
                         rules=load_rules(None), routes=load_routes(None),
                         merges=KeyedState(encode_book, decode_book, books.load, books.write))


def _control(stage: CustomerStage, key: str, m) -> None:  # noqa: ANN001
    kind, value = encode(m)
    stage.process(value, "cem.touchpoints", partition_for(key.encode(), PARTS), 0, [(CONTROL_HEADER, kind.encode())])


def _watermark(stage: CustomerStage, wm: int) -> None:
    for p in range(PARTS):
        stage.process(json.dumps({"control": "watermark", "wm": wm}).encode(), "cem.touchpoints", p, 0,
                      [(CONTROL_HEADER, b"watermark")])


@pytest.mark.parametrize("max_live", [0, 3], ids=["in-memory", "spilling"])
def test_an_old_changelog_restores_its_bookkeeping_into_its_own_table_and_is_migrated(max_live):
    fx, log = _old_log()
    (w1, l1, _), (w2, l2, _) = fx["merges"]
    books = Log()
    stage = _stage(log, books, Rows(), [], max_live)  # spilling: old keys are restored into the spill
    _watermark(stage, 0)  # opens (restores) both partitions
    assert stage.merges.get(l1) == MergeBook(merged_into=w1) and stage.merges.get(l2) == MergeBook(merged_into=w2)
    assert stage.merges.get(w2) == MergeBook(awaiting=(l2,)) and stage.merges.get(w1) is None
    assert not [k for k in stage.table.keys() if k.startswith("__")]  # timelines only
    assert all(isinstance(stage.table.get(k), Timeline) for k in stage.table.keys())
    stage.flush()
    # the old keys are tombstoned where they were, the books written to their own changelog
    old = [k for k in log.latest() if k.startswith(b"__")]
    assert old and all(log.latest()[k] is None for k in old)
    assert {k: decode_book(k.decode(), v) for k, v in books.latest().items() if v is not None} == {
        l1.encode(): MergeBook(w1), l2.encode(): MergeBook(w2), w2.encode(): MergeBook(None, (l2,))}
    # a later restart restores the same state from the two changelogs
    again = _stage(log, books, Rows(), [], max_live)
    _watermark(again, 0)
    for c in (w1, l1, w2, l2):
        assert again.merges.get(c) == stage.merges.get(c)
    assert sorted(again.table.keys()) == sorted(stage.table.keys())


def test_a_book_in_its_own_changelog_wins_over_an_old_key_not_yet_tombstoned():
    """The migration's flush wrote the book but a crash lost the old key's tombstone: the book is newer."""
    fx, log = _old_log()
    (w2, l2, _) = fx["merges"][1]
    books = Log([(partition_for(w2.encode(), PARTS), w2.encode(), encode_book(w2, MergeBook(None, ("other",))))])
    stage = _stage(log, books, Rows(), [])
    _watermark(stage, 0)
    assert stage.merges.get(w2) == MergeBook(None, ("other",))
    assert stage.merges.get(l2) == MergeBook(w2)  # no book of its own: taken from the old key


def test_after_the_migration_the_stage_carries_on_as_the_old_one_did():
    """Rows the previous code published when restored from the same changelog and given the same
    records (captured before the change, with the same fixed clock)."""
    fx, log = _old_log()
    after = json.loads((FIXTURES / "changelog_after.json").read_text())
    rows, controls = Rows(), []
    stage = _stage(log, Log(), rows, controls)
    _watermark(stage, after["wm0"] + 3 * 86_400_000)
    stage.flush()
    step0, rows.rows = json.loads(json.dumps(rows.rows)), []
    (w2, l2, _) = fx["merges"][1]
    _control(stage, w2, Handover(w2, l2, None))
    _watermark(stage, after["wm0"] + 10 * 86_400_000)
    stage.flush()
    step1 = json.loads(json.dumps(rows.rows))
    assert [step0, step1] == after["steps"] and after["steps"][1]
    assert controls == after["controls"] == []
    assert stage.merges.get(w2) is None  # the hand-over ended the wait


def test_a_touch_or_alert_action_for_a_customer_merged_away_before_the_upgrade_still_follows_the_winner():
    fx, log = _old_log()
    (w1, l1, _) = fx["merges"][0]
    controls: list = []
    stage = _stage(log, Log(), Rows(), controls)
    template = next(e for e in Simulator(SimConfig(customers=20, days=1, seed=5)).run() if e["channel"] == "web")
    ev = dict(template, event_id="late-1", cem=(RESOLUTION, {"customer_id": l1, "late": False, "processed_at": 0}))
    if ev["web"] is not None:
        ev["web"] = (ATTRIBUTE_RECORDS["web"], ev["web"])
    record = encode_batch([ev], default_registry().latest("touchpoint").parsed)
    stage.process(record, "cem.touchpoints", partition_for(l1.encode(), PARTS), 0, None)
    _control(stage, l1, AlertAction(l1, "a1", "ack", "ops", None, 5))
    assert [(k, type(m).__name__) for k, m in controls] == [(w1, "Forward"), (w1, "AlertAction")]
    forward, action = controls[0][1], controls[1][1]
    assert forward.winner == w1 and [t.event_id for st in forward.timeline.subjects.values() for t in st.touches] == [
        "late-1"]
    assert action == AlertAction(w1, "a1", "ack", "ops", None, 5)


@given(st.none() | st.text(max_size=8), st.lists(st.text(max_size=8), max_size=4).map(tuple))
def test_a_book_round_trips_through_its_json(merged_into, awaiting):
    book = MergeBook(merged_into, awaiting)
    assert decode_book("c", encode_book("c", book)) == book
