"""Alert lifecycle on the real pipeline: a payment failure opens an alert, `cem alerts ack`
acknowledges it, a second failure only counts an occurrence, `cem alerts resolve` resolves it, a
third failure reopens it — one alert row in ClickHouse with its whole story, three moments."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import publish_events
from cem.kafka.admin import partitions_of
from cem.ops.procs import settings_env
from cem.schemas.registry import default_registry
from cem.settings import ALERTS_TOPIC, RAW_TOPICS
from tests.support.ch import clickhouse
from tests.support.pipeline import read_topic, start, stop_role, wait_caught_up, wait_until

pytestmark = pytest.mark.integration
H = 3_600_000


def failure(eid: str, at: int) -> dict:
    return {"event_id": eid, "event_type": "payment_failed", "channel": "web", "occurred_at": at, "received_at": at,
            "source": "story", "identifiers": {"anonymous_id": "anon-lifecycle"},
            "web": {"url": "/checkout", "amount_cents": 4999, "currency": "EUR"}}


def latest_alert(s) -> dict | None:
    rows = [json.loads(line) for m in read_topic(KafkaConnection.from_settings(s), ALERTS_TOPIC)
            for line in m.value().splitlines()]
    return max(rows, key=lambda r: r["version"]) if rows else None


def cli(s, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cem", *args], env=settings_env(s), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_open_ack_occurrence_resolve_reopen(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    reg = default_registry()
    t0 = int(time.time() * 1000) - 10 * H
    worker, sink = start("worker", s), start("sink", s)

    def wait_for(what: str, pred) -> dict:
        wait_until(lambda: (a := latest_alert(s)) is not None and pred(a), 90, 0.3, what, (worker, sink))
        return latest_alert(s)
    try:
        publish_events(kafka, [failure("pf-1", t0)], reg, parts)
        opened = wait_for("the alert to open", lambda a: a["status"] == "open")
        assert (opened["revision"], opened["occurrences"], opened["team"]) == (1, 1, "web-checkout")
        assert "ack of alert" in cli(s, "alerts", "ack", opened["alert_id"], "--by", "ana", "--note", "calling")
        acked = wait_for("the acknowledgement", lambda a: a["status"] == "acknowledged")
        assert (acked["revision"], acked["actor"], acked["note"]) == (2, "ana", "calling")
        publish_events(kafka, [failure("pf-2", t0 + 2 * H)], reg, parts)  # past the 1 h cooldown
        counted = wait_for("the second occurrence", lambda a: a["occurrences"] == 2)
        assert (counted["status"], counted["revision"]) == ("acknowledged", 2)  # nobody paged again
        cli(s, "alerts", "resolve", opened["alert_id"], "--by", "ana", "--note", "refunded")
        wait_for("the resolution", lambda a: a["status"] == "resolved")
        publish_events(kafka, [failure("pf-3", t0 + 4 * H)], reg, parts)
        reopened = wait_for("the reopen", lambda a: a["occurrences"] == 3)
        assert (reopened["status"], reopened["revision"], reopened["actor"]) == ("open", 4, None)
        assert reopened["alert_id"] == opened["alert_id"]
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        rows = c.query("SELECT alert_id, status, revision, occurrences FROM alerts FINAL").result_rows
        moments = c.query("SELECT count() FROM negative_moments FINAL WHERE rule = 'payment_failed'").result_rows[0][0]
    assert rows == [(opened["alert_id"], "open", 4, 3)]
    assert moments == 3
    # an unknown alert id is refused with a hint, not silently accepted
    out = subprocess.run([sys.executable, "-m", "cem", "alerts", "ack", "nope", "--by", "x"],
                         env=settings_env(s), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "no alert nope" in out.stdout
