"""`cem demo` leaves nothing behind for the pipeline you run next: run the demo with a user's
settings (their broker, app id, data dir), then that user's own pipeline on the same seed as the
demo (every customer and identifier collides with the demo's), and the run scores precision 1.0
on its own ground truth: no inherited customer state, identity links or consumer offsets."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cem.connectors.simulate import simulate
from cem.ops.demo import DEMO_APP_ID
from cem.ops.procs import settings_env
from cem.ops.report import truth_report
from cem.sim.simulator import DAY, SimConfig
from tests.support.pipeline import start, stop_role, wait_caught_up

pytestmark = pytest.mark.e2e


def test_a_pipeline_run_after_the_demo_scores_precision_one_on_its_own_truth(cem_settings, tmp_path):
    s = cem_settings
    demo = subprocess.run([sys.executable, "-m", "cem", "demo", "--customers", "300", "--days", "1",
                           "--malformed", "5"], env=settings_env(s), capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "moments found" in demo.stdout and "Traceback" not in demo.stderr
    moments = demo.stdout.split("negative moments by rule")[1].split("customers by lifecycle stage")[0]
    header = next(line for line in moments.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["rule", "moments", "recovered", "unrecovered", "open",
                                                             "owner team"]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in moments.splitlines() if line.startswith("│")]
    assert rows and all(len(r) == 6 for r in rows)
    for rule, n, recovered, unrecovered, still_open, _team in rows:  # every moment is in one column
        assert int(recovered) + int(unrecovered) + int(still_open) == int(n), rule
    assert (s.data_dir / "demo" / "clickhouse").is_dir()
    assert not (s.data_dir / "demo" / "kafka").exists()  # its private broker is gone with its data

    worker, sink = start("worker", s), start("sink", s)
    try:
        res = simulate(s, SimConfig(customers=300, days=1, seed=7, start_ms=int(time.time() * 1000) - DAY,
                                    out_of_order_rate=0.05), tmp_path / "sim")  # the demo's seed
        wait_caught_up(s, (worker, sink))
        time.sleep(s.idle_timeout_seconds + 2 * s.tick_seconds + 1)  # absence timers fire, sessions close
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    r = truth_report(s, tmp_path / "sim")
    assert r["events_landed"] == r["events_truth"] == res.events
    rules = r["rules"].values()
    detected = sum(x["detected"] for x in rules)
    right = sum(x["detected"] * x["precision"] for x in rules)
    assert detected >= 10
    assert right == pytest.approx(detected), {k: v for k, v in r["rules"].items() if v["precision"] < 1}
    assert s.app_id != DEMO_APP_ID
