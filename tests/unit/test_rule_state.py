"""Rule state (cem.detect) in the changelog: named, versioned encoding that round-trips exactly,
and state written in the unversioned positional format before it still read and carried on."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from cem.detect import (STATE_VERSION, CountHit, Detector, Expected, Moment, OpenMoment, Pending, Signal,
                        StateVersionError, StepHit)
from cem.rules import load_rules, parse_rule
from cem.sessions import Touch

# the fixtures were captured with repeat_contact counting calls by order (the catalogue before
# contacts on every channel); the state must carry on under the rule it was built with
RULES = tuple(parse_rule({"name": "repeat_contact", "kind": "count", "severity": "high", "team": "customer-care",
                          "recovery": "7d", "match": {"event_type": "call_started"}, "group_by": "order_id",
                          "threshold": 2, "window": "7d"}) if r.name == "repeat_contact" else r
              for r in load_rules())
BY = {r.name: r for r in RULES}
S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state_v1" / "detector.json"


def touches(seed: int = 11, n: int = 400) -> list[list]:
    """Touches that leave every kind of rule state behind (the fixture was captured from these:
    its `state` after the first `split` of them, `moments_after` for the rest)."""
    rnd = random.Random(seed)
    out: list[list] = []
    at = 1_700_000_000_000
    for i in range(n):
        at += rnd.choice([200, 700, 5 * S, 2 * M, 20 * M, 3 * H, 14 * H])
        jitter = rnd.choice([0, 0, 0, -3 * S, -40 * S])  # a little out of order
        kind = rnd.choice(["click", "click", "click", "search0", "search", "checkout", "order", "return",
                           "refund", "call", "transfer", "unavail", "payfail", "nps_low", "nps_high", "csat_low",
                           "call_resolved"])
        eid = f"e{i:04d}"
        a = at + jitter
        if kind == "click":
            out.append([a, eid, "click", "web", "s1", None, {"element": rnd.choice(["buy", "cart"])}])
        elif kind == "search0":
            out.append([a, eid, "search", "web", rnd.choice(["s1", "s2"]), None, {"results_count": 0}])
        elif kind == "search":
            out.append([a, eid, "search", "web", "s1", None, {"results_count": 5}])
        elif kind == "checkout":
            out.append([a, eid, "checkout_started", "web", "s1", None, {}])
        elif kind == "order":
            out.append([a, eid, "order_placed", "web", "s1", None, {}])
        elif kind == "return":
            out.append([a, eid, "return_received", "returns", "r1", None, {"rma_id": rnd.choice(["rma1", "rma2"])}])
        elif kind == "refund":
            out.append([a, eid, "refund_issued", "returns", "r1", None, {"rma_id": rnd.choice(["rma1", "rma2"])}])
        elif kind == "call":
            out.append([a, eid, "call_started", "phone", "c1", None, {"_order_id": rnd.choice(["o1", "o2"]),
                                                                     "call_id": f"call{i % 3}"}])
        elif kind == "transfer":
            out.append([a, eid, "transfer", "phone", "c1", None, {"call_id": f"call{i % 3}"}])
        elif kind == "unavail":
            out.append([a, eid, "item_unavailable", "store", "st1", "store-03", {}])
        elif kind == "payfail":
            out.append([a, eid, "payment_failed", "web", "s1", None, {}])
        elif kind == "nps_low":
            out.append([a, eid, "survey_response", "survey", "sv", None, {"nps": 3}])
        elif kind == "nps_high":
            out.append([a, eid, "survey_response", "survey", "sv", None, {"nps": 10}])
        elif kind == "csat_low":
            out.append([a, eid, "survey_response", "survey", "sv", None, {"csat": 1}])
        else:
            out.append([a, eid, "call_ended", "phone", "c1", None, {"resolved": True}])
    return out


def _moment(m: Moment) -> dict:
    return {"moment_id": m.moment_id, "rule": m.rule, "customer_id": m.customer_id, "channel": m.channel,
            "store_id": m.store_id, "at": m.at, "evidence": list(m.evidence), "recovery_deadline": m.recovery_deadline,
            "status": m.status, "recovered_by": m.recovered_by}


def _run(d: Detector, ts: list[list], final_wm: int | None = None) -> list[list]:
    """What the fixture's capture did: every touch, a watermark 2 h behind every 7th."""
    out: list[list] = []
    for i, (at, eid, et, ch, subj, store, attrs) in enumerate(ts):
        new, changed = d.on_touch(RULES, "c1", Touch(at, eid, et, ch, subj, store, attrs))
        out += [["new", _moment(m)] for m in new] + [["changed", _moment(m)] for m in changed]
        if i % 7 == 6:
            new, changed = d.on_watermark(BY, "c1", at - 2 * H)
            out += [["new", _moment(m)] for m in new] + [["changed", _moment(m)] for m in changed]
    if final_wm is not None:
        new, changed = d.on_watermark(BY, "c1", final_wm)
        out += [["new", _moment(m)] for m in new] + [["changed", _moment(m)] for m in changed]
    return out


def _reencoded(d: Detector) -> Detector:
    return Detector.from_json(json.loads(json.dumps(d.to_json())))


def test_state_in_the_old_positional_format_is_read_and_carries_on_as_it_did():
    fx = json.loads(FIXTURE.read_text())
    assert "version" not in fx["state"] and set(fx["state"]) == set("cqpefos")
    ts = touches()
    old = Detector.from_json(fx["state"])
    assert old.counts and old.seqs and old.pending and old.expected and old.fired and old.open and old.signals
    # the moments the old code derived from this state, derived again from it by this code
    assert _run(old, ts[fx["split"]:], ts[-1][0] + 30 * D) == fx["moments_after"]
    # and what an uninterrupted run of this code derives: the old state was this code's state
    whole = Detector()
    _run(whole, ts[:fx["split"]])
    assert whole == Detector.from_json(fx["state"])
    assert _run(whole, ts[fx["split"]:], ts[-1][0] + 30 * D) == fx["moments_after"]


def test_old_state_rewritten_in_the_named_format_is_the_same_state():
    fx = json.loads(FIXTURE.read_text())
    old = Detector.from_json(fx["state"])
    written = old.to_json()
    assert written["version"] == STATE_VERSION
    assert set(written) == {"version", "counts", "sequences", "pending", "expected", "fired", "open", "signals"}
    assert Detector(signals=[Signal(1, "e")]).to_json() == {"version": STATE_VERSION,
                                                            "signals": {"at": [1], "event_id": ["e"]}}
    assert set(written["pending"]) == {"rule", "event_id", "at", "deadline", "correlate", "channel", "store_id"}
    assert written["signals"]["event_id"] == [s.event_id for s in old.signals]
    assert _reencoded(old) == old
    ts = touches()
    assert _run(_reencoded(old), ts[fx["split"]:], ts[-1][0] + 30 * D) == fx["moments_after"]


def test_columns_of_unequal_length_are_refused():
    d = Detector(signals=[Signal(1, "e"), Signal(2, "f")]).to_json()
    d["signals"]["at"].pop()
    with pytest.raises(ValueError, match="Signal columns"):
        Detector.from_json(d)


def test_a_version_this_worker_does_not_know_is_refused_not_guessed():
    d = Detector(signals=[Signal(1, "e")]).to_json()
    d["version"] = STATE_VERSION + 1
    with pytest.raises(StateVersionError, match="version 3"):
        Detector.from_json(d)


_ids = st.text("abcxyz-|0123", min_size=1, max_size=6)
_at = st.integers(-(1 << 53), 1 << 53)
_corr = st.one_of(st.none(), st.just("*"), _ids, st.integers(-1000, 1000))
_detectors = st.builds(
    Detector,
    counts=st.dictionaries(_ids, st.lists(st.builds(CountHit, _at, _ids, _ids), max_size=4), max_size=3),
    seqs=st.dictionaries(_ids, st.lists(st.builds(StepHit, _at, _ids, st.integers(0, 5)), max_size=4), max_size=3),
    pending=st.lists(st.builds(Pending, _ids, _ids, _at, _at, _corr, _ids, st.none() | _ids), max_size=3),
    expected=st.dictionaries(_ids, st.lists(st.builds(Expected, _at, _corr), max_size=3), max_size=3),
    fired=st.dictionaries(_ids, _at, max_size=3),
    open=st.lists(st.builds(OpenMoment, _ids, _ids, _ids, _ids, st.none() | _ids, _at,
                            st.lists(_ids, max_size=3).map(tuple), _at), max_size=3),
    signals=st.lists(st.builds(Signal, _at, _ids), max_size=4))


@given(_detectors)
def test_rule_state_round_trips_through_its_json_exactly(d):
    assert _reencoded(d) == d


@given(_detectors)
def test_the_old_format_of_a_state_reads_as_that_state(d):
    """The unversioned writer, as it was, applied to any state: the reader gives it back."""
    old = {"c": {k: [[e.at, e.event_id, e.channel] for e in v] for k, v in d.counts.items()},
           "q": {k: [[e.at, e.event_id, e.step] for e in v] for k, v in d.seqs.items()},
           "p": [[p.rule, p.event_id, p.at, p.deadline, p.correlate, p.channel, p.store_id] for p in d.pending],
           "e": {k: [[e.at, e.correlate] for e in v] for k, v in d.expected.items()},
           "f": d.fired,
           "o": [{"id": o.moment_id, "rule": o.rule, "c": o.customer_id, "ch": o.channel, "st": o.store_id,
                  "at": o.at, "ev": list(o.evidence), "deadline": o.deadline, "status": "open", "by": None}
                 for o in d.open],
           "s": [[s.at, s.event_id] for s in d.signals]}
    assert Detector.from_json(json.loads(json.dumps(old))) == d


def test_count_hits_written_before_the_channel_was_kept_still_read():
    d = Detector.from_json({"c": {"rage_click|buy": [[5, "e1"], [7, "e2", "web"]]}, "q": {}, "p": [], "e": {},
                            "f": {}, "o": [], "s": []})
    assert d.counts == {"rage_click|buy": [CountHit(5, "e1", ""), CountHit(7, "e2", "web")]}


def test_state_records_are_frozen():
    with pytest.raises(AttributeError):
        Signal(1, "e").at = 2  # type: ignore[misc]
