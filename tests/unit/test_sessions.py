"""Sessions and journeys on event time: shuffled input within lateness equals sorted input;
timers close sessions with no further events; merges absorb open state."""
from __future__ import annotations


from hypothesis import given, settings, strategies as st

from cem.sessions import MIN, Touch
from cem.timeline import Timeline

LATENESS = 10 * MIN


def web(at, eid, subject="a1", et="page_view"):
    return Touch(at, eid, et, "web", subject)


def run(touches, order, final_wm):
    tl = Timeline("c1")
    wm = -10**15
    max_t = -10**15
    closed = []
    for i in order:
        t = touches[i]
        max_t = max(max_t, t.at)
        closed += [s for s, st_, _ in tl.add(t, wm).sessions if st_ == "closed"]
        wm = max(wm, max_t - LATENESS)
        closed += [s for s, st_, _ in tl.advance(wm).sessions if st_ == "closed"]
    closed += [s for s, st_, _ in tl.advance(final_wm).sessions if st_ == "closed"]
    return sorted(tuple(t.event_id for t in s.touches) for s in closed)


@st.composite
def web_stream(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.sampled_from([10_000, 5 * MIN, 20 * MIN, 29 * MIN, 31 * MIN, 3 * 60 * MIN]),
                         min_size=n, max_size=n))
    at, out = 1_000_000, []
    for i, g in enumerate(gaps):
        at += g
        out.append(web(at, f"e{i:03d}", subject=draw(st.sampled_from(["a1", "a2"]))))
    return out


@settings(max_examples=200, deadline=None)
@given(web_stream(), st.randoms(use_true_random=False))
def test_shuffled_within_lateness_equals_sorted(touches, rnd):
    sorted_order = list(range(len(touches)))
    # shuffle only within the lateness: each event is delayed by less than LATENESS
    delayed = sorted(sorted_order, key=lambda i: touches[i].at + rnd.randrange(0, LATENESS - 1000))
    final = touches[-1].at + 10**9
    assert run(touches, delayed, final) == run(touches, sorted_order, final)


def test_inactivity_gap_and_max_duration_split_web_sessions():
    ts = [web(0, "a"), web(29 * MIN, "b"), web(60 * MIN, "c")]
    ts += [web(60 * MIN + i * 20 * MIN, f"d{i}") for i in range(1, 80)]
    got = run(ts, range(len(ts)), 10**12)
    assert got[0] == ("a", "b")  # 31 min gap before c
    assert all(len(s) * 20 * MIN <= 24 * 60 * MIN + 20 * MIN for s in got[1:])


def test_timers_close_sessions_without_further_events():
    tl = Timeline("c1")
    tl.add(web(0, "a"), -1)
    assert not [s for s, st_, _ in tl.advance(29 * MIN).sessions if st_ == "closed"]
    assert tl.next_deadline() == 30 * MIN
    closed = [s for s, st_, _ in tl.advance(30 * MIN).sessions if st_ == "closed"]
    assert [t.event_id for t in closed[0].touches] == ["a"]
    assert not tl.subjects


def test_store_visit_ends_on_visit_ended_and_call_on_call_ended():
    tl = Timeline("c1")
    for t in [Touch(0, "v1", "visit_started", "store", "visit:s1"),
              Touch(5 * MIN, "v2", "visit_ended", "store", "visit:s1"),
              Touch(10 * MIN, "v3", "visit_started", "store", "visit:s1"),
              Touch(0, "p1", "call_started", "phone", "call-1"), Touch(9 * MIN, "p2", "call_ended", "phone", "call-1")]:
        tl.add(t, -1)
    closed = [s for s, st_, _ in tl.advance(9 * MIN).sessions if st_ == "closed"]
    assert sorted(tuple(t.event_id for t in s.touches) for s in closed) == [("p1", "p2"), ("v1", "v2")]


def test_late_event_beyond_lateness_is_its_own_flagged_session():
    tl = Timeline("c1")
    changes = tl.add(web(0, "old"), watermark=5 * MIN)
    [(s, status, _)] = changes.sessions
    assert s.late and status == "closed"


def test_an_earlier_event_renames_the_open_session_and_deletes_the_old_id():
    tl = Timeline("c1")
    first = tl.add(web(10 * MIN, "b"), -1).sessions[0][0].session_id
    statuses = {(s.session_id, st_) for s, st_, _ in tl.add(web(5 * MIN, "a"), -1).sessions}
    assert (first, "deleted") in statuses and any(st_ == "open" and sid != first for sid, st_ in statuses)


def test_merge_absorbs_the_losers_open_session():
    winner, loser = Timeline("w"), Timeline("l")
    loser.add(web(0, "a"), -1)
    winner.add(web(2 * MIN, "b"), -1)
    winner.absorb(loser)
    closed = [s for s, st_, _ in winner.advance(10**9).sessions if st_ == "closed"]
    assert [[t.event_id for t in s.touches] for s in closed] == [["a", "b"]]


def test_journey_closes_on_purchase_and_json_round_trip():
    tl = Timeline("c1")
    tl.add(web(0, "a"), -1)
    tl.add(Touch(HOUR := 60 * MIN, "b", "call_started", "phone", "call-9"), -1)
    tl.add(web(3 * HOUR, "c", et="order_placed", subject="a9"), -1)
    clone = Timeline.from_json(tl.to_json())
    assert clone.to_json() == tl.to_json()
    journeys = tl.advance(10**9).journeys
    closed = [j for j in journeys if j.closed]
    assert closed and closed[-1].outcome == "purchase" and closed[-1].channels[0] == "web"
