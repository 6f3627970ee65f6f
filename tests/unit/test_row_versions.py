"""Every row the customer stage publishes carries a version, and landing keeps the highest per id
(ReplacingMergeTree(version)): so the last row published for an id must carry its highest
version, even when many rows go out within one millisecond. Pure, no broker: a fixed clock
stands for a busy millisecond."""
from __future__ import annotations

import json

from cem.kafka.partitioning import partition_for
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.schemas.stage import encode_rows, stage_row
from cem.sim.simulator import SimConfig, Simulator
from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
from cem.streams.ingest import RESOLUTION, branch_tagged
from cem.streams.state import KeyedState
from tests.support.recording import Rows

PARTS = 3
#: table -> the id landing deduplicates on (the table's ORDER BY)
IDS = {"cem.moments": "moment_id", "cem.sessions": "session_id", "cem.alerts": "alert_id",
       "cem.journeys": "journey_id"}


def test_the_last_row_published_for_an_id_has_its_highest_version_within_one_millisecond():
    sim = Simulator(SimConfig(customers=200, days=3, seed=11))
    events = list(sim.run())
    customer = {t["event_id"]: t["customer"] for t in sim.truth.events}
    rows = Rows()
    state = KeyedState(encode_state, decode_state, lambda p: iter(()), lambda p, k, v: None)
    stage = CustomerStage(state, default_registry(), rows, lambda key, body: None, clock=lambda: 1_800_000_000.0,
                          rules=load_rules(None), routes=load_routes(None))
    for i in range(0, len(events), 100):
        chunk = events[i:i + 100]
        by_part: dict[int, list] = {}
        for ev in chunk:
            c = customer[ev["event_id"]]
            ev = branch_tagged(dict(ev, cem=(RESOLUTION, {"customer_id": c, "late": False, "processed_at": 0})))
            by_part.setdefault(partition_for(c.encode(), PARTS), []).append(stage_row(ev, c))
        for p, part_rows in sorted(by_part.items()):
            stage.process(encode_rows(part_rows), "cem.stage", p, i)
        wm = max(e["received_at"] for e in chunk) - 600_000
        for p in range(PARTS):
            stage.process(json.dumps({"control": "watermark", "wm": wm}).encode(), "cem.stage", p, i,
                          [(CONTROL, b"watermark")])
    assert len(rows.rows) > 2000  # more rows than the counter's 1000 within the one millisecond
    last: dict[tuple[str, str], int] = {}
    highest: dict[tuple[str, str], int] = {}
    for topic, _, row in rows.rows:
        if topic in IDS:
            key = (topic, row[IDS[topic]])
            last[key] = row["version"]
            highest[key] = max(highest.get(key, 0), row["version"])
    stale = {k for k in last if last[k] != highest[k]}
    assert not stale, f"{len(stale)} ids whose last row would lose to an older one, e.g. {sorted(stale)[:3]}"
    versions = [row["version"] for _, _, row in rows.rows]
    assert versions == sorted(set(versions))  # strictly increasing
