"""`cem bench` end to end on the test broker (issue 9): a small run prints every stage (a)–(g)
as JSON on stdout alone (for comparing commits) and as the table. The figures are not judged
here — the machine is noisy and speed is never checked by a timed test — only that each stage
ran, measured something, and that the ratios are the ratios of the figures measured."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.console import Console

from cem.ops.bench import _print
from cem.ops.procs import settings_env

pytestmark = pytest.mark.integration


def test_cem_bench_measures_every_stage_in_one_run(cem_settings):
    port = cem_settings.kafka_bootstrap.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "cem", "bench", "--events", "3000", "--steady-seconds", "3",
                           "--steady-rate", "500", "--workers", "2", "--json"], capture_output=True, text=True,
                          timeout=900, env=settings_env(cem_settings, CEM_KAFKA_PORT=port))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)  # stdout is the JSON alone
    for stage in ("raw_eps", "naive_eps", "landing_eps", "pipeline_eps"):
        assert r[stage] > 0, stage
    assert r["landing_rows"] >= 3_500  # the warm-up and the measured events, at least
    assert r["ratios"]["landing/naive"] == pytest.approx(r["landing_eps"] / r["naive_eps"])
    assert r["ratios"]["pipeline/raw"] == pytest.approx(r["pipeline_eps"] / r["raw_eps"])
    assert 0 < r["latency_row_ms"]["p50"] <= r["latency_row_ms"]["p99"]
    assert r["steady"] == {"rate": 500, "seconds": 3.0}
    assert all(len(xs) >= 2 and min(xs) > 0 for xs in r["rss_samples_mb"].values()), r["rss_samples_mb"]
    assert r["rss_peak_mb"]["worker"] > 0 and r["rss_peak_mb"]["sink"] > 0
    assert r["state_bytes_per_customer"] > 0 and r["customers_with_state"] > 0
    # the replayed traffic is on time: a late event would get a one-event session of its own
    assert r["late_session_share"] < 0.02, r["late_session_share"]
    assert 0 < r["coordinator_share"] <= 1
    so = r["scale_out"]  # (d)/(e) again with two worker processes in one group, twice the rate
    assert so["workers"] == 2 and so["pipeline_eps"] > 0 and so["steady"]["rate"] == 1000
    assert r["ratios"]["pipeline 2 workers/1 worker"] == pytest.approx(so["pipeline_eps"] / r["pipeline_eps"])
    assert {"worker", "worker-1", "sink"} <= set(so["rss_peak_mb"])
    console = Console(record=True, width=220)
    _print(r, console)
    table = console.export_text()
    for label in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "after warm-up", "2 worker processes",
                  "identity coordinator decided"):
        assert label in table, label
