"""Backtest replay (pure): the same detectors over stored touches, compared by moment id."""
from __future__ import annotations

from cem.ops.backtest import compare, replay
from cem.detect import moment_id
from cem.rules import load_rules

RULES = load_rules(None)
MIN = 60_000


def ev(eid, etype, at, **web):
    return {"event_id": eid, "event_type": etype, "channel": "web", "occurred_at": at, "store_id": None,
            "identifiers": {"anonymous_id": "a1"}, "web": {"url": "/", **web}}


def test_replay_fires_single_count_and_absence_rules_in_event_time_order():
    events = [ev("c3", "click", 1_400, element="#pay"), ev("c1", "click", 1_000, element="#pay"),
              ev("pf", "payment_failed", 2_000), ev("co", "checkout_started", 5 * MIN),
              ev("c2", "click", 1_200, element="#pay")]
    moments = replay([("cus-1", events)], RULES, until_ms=5 * MIN + 31 * MIN)
    assert sorted(m.rule for m in moments) == ["checkout_abandoned", "payment_failed", "rage_click"]
    rage = next(m for m in moments if m.rule == "rage_click")
    assert rage.evidence == ["c1", "c2", "c3"] and rage.moment_id == moment_id("rage_click", "c1")
    # the timer has not run out yet at an earlier `until`: no abandoned checkout
    early = replay([("cus-1", events)], RULES, until_ms=5 * MIN + 29 * MIN)
    assert "checkout_abandoned" not in {m.rule for m in early}


def test_compare_counts_same_only_stored_and_only_new_per_rule():
    moments = replay([("cus-1", [ev("pf", "payment_failed", 0)])], RULES, until_ms=MIN)
    rows = {r.rule: r for r in compare(RULES, moments, [("payment_failed", moment_id("payment_failed", "pf")),
                                                        ("payment_failed", "gone"), ("retired_rule", "x")])}
    pf = rows["payment_failed"]
    assert (pf.stored, pf.replayed, pf.both, pf.only_stored, pf.only_replayed) == (2, 1, 1, 1, 0)
    assert rows["retired_rule"].kind == "(not in file)" and rows["retired_rule"].stored == 1
    assert rows["rage_click"].stored == rows["rage_click"].replayed == 0
