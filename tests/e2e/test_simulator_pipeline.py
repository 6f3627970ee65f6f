"""End to end: simulator → connectors' publisher → raw topics → worker → cem.touchpoints →
landing → ClickHouse, on the real broker and chdb; counts per channel match the simulator."""
from __future__ import annotations

import json
import time

import pytest

from cem.connectors.simulate import simulate
from cem.sim.simulator import DAY, SimConfig
from tests.support.ch import clickhouse
from tests.support.pipeline import start, stop_role, wait_caught_up

pytestmark = pytest.mark.e2e


def test_simulated_customers_land_in_clickhouse_per_channel(cem_settings, tmp_path):
    s = cem_settings
    worker, sink = start("worker", s), start("sink", s)
    try:
        start_ms = int(time.time() * 1000) - 3 * DAY
        res = simulate(s, SimConfig(customers=1000, days=3, seed=3, start_ms=start_ms, out_of_order_rate=0.05),
                       tmp_path / "sim")
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    with clickhouse(s) as c:
        per_channel = dict(c.query("SELECT channel, count() FROM touchpoints FINAL GROUP BY channel").result_rows)
        leaks = c.query("SELECT count() FROM touchpoints WHERE positionCaseInsensitive(toString(identifiers), "
                        "'@example.com') > 0 OR positionCaseInsensitive(toString(identifiers), '+4930') > 0"
                        ).result_rows[0][0]
    assert per_channel == summary["per_channel"] == dict(res.per_channel)
    assert sum(per_channel.values()) == res.events > 5_000
    assert leaks == 0
