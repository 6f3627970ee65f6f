"""Issue 11, security: after a simulator run plus raw emails and phone numbers sent through every
edge that accepts them (native collector JSON, Segment traits, a malformed event that goes to
the DLQ, a CSV import), no raw email or phone appears in any Kafka topic, log file or ClickHouse
table — only HMAC hashes. The scan searches every record's bytes, every log line and every row
of every table for each raw value (as sent, lower-cased, and normalized to E.164)."""
from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from cem.kafka.connection import KafkaConnection
from cem.connectors.importers import import_file
from cem.connectors.pseudonymize import normalize_phone
from cem.connectors.simulate import simulate
from cem.kafka.topic_reader import read_to_end
from cem.sim.simulator import DAY, SimConfig, Simulator
from cem.settings import ALL_TOPICS, merge_state_topic, state_topic
from tests.support.ch import clickhouse
from tests.support.pipeline import free_port, http_ok, start, stop_role, wait_caught_up, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY = "pii-key"



def post(port: int, path: str, body: dict, headers: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def forms(raw: str) -> set[str]:
    out = {raw, raw.strip().lower()}
    if "@" not in raw:
        try:
            out.add(normalize_phone(raw))
        except Exception:  # noqa: BLE001 - not a phone after all
            pass
    return {f for f in out if len(f) >= 6}


def test_no_raw_email_or_phone_anywhere_after_a_run(cem_settings, tmp_path):
    port = free_port()
    s = cem_settings.model_copy(update={"collector_port": port, "collector_api_keys": {"web-shop": SecretStr(KEY)},
                                        "idle_timeout_seconds": 3.0, "tick_seconds": 1.0})
    kafka = KafkaConnection.from_settings(s)
    cfg = SimConfig(customers=600, days=3, seed=5, start_ms=int(time.time() * 1000) - 3 * DAY)
    raw: set[str] = set()
    list(Simulator(cfg, lambda kind, value: raw.add(value) or f"h:{kind}").run())  # what the simulator hashes
    now = int(time.time() * 1000)
    sent = {"jane.roe@example.com": "email", "+49 30 555 0101": "phone", "Max.Power@Example.org": "email",
            "0049 40 555 0199": "phone", "broken@example.net": "email"}
    raw |= set(sent)
    raw |= set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", (FIXTURES / "pos_transactions.csv").read_text()))
    raw |= set(re.findall(r"\+\d[\d ]{7,}\d", (FIXTURES / "cdr.csv").read_text()))

    worker, sink = start("worker", s, "worker"), start("sink", s)
    collector = start("collector", s, "collector")
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, 0.5, "the collector", (collector,))
        simulate(s, cfg, tmp_path / "sim", rate=20_000)
        auth = {"X-API-Key": KEY}
        assert post(port, "/v1/events", {"batch": [
            {"event_id": "pii-1", "event_type": "login", "occurred_at": now,
             "identifiers": {"email": "jane.roe@example.com", "phone": "+49 30 555 0101"}},
            {"event_id": "pii-2", "event_type": "page_view", "occurred_at": now,
             "identifiers": {"email": "broken@example.net"}, "attributes": {"url": 42}},  # rejected: DLQ copy
        ]}, auth) == 202
        basic = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
        assert post(port, "/v1/identify", {"userId": "u-pii", "messageId": "pii-3", "anonymousId": "a-pii",
                                           "traits": {"email": "Max.Power@Example.org", "phone": "0049 40 555 0199"},
                                           "context": {"traits": {"email": "Max.Power@Example.org"}}}, basic) == 200
        report = import_file(s, "store", FIXTURES / "pos_transactions.csv")
        assert report.published > 0
        import_file(s, "phone", FIXTURES / "cdr.csv")
        wait_caught_up(s, (worker, sink), timeout=300)
        time.sleep(s.idle_timeout_seconds + 3 * s.tick_seconds)
        wait_caught_up(s, (worker, sink), timeout=120)
    finally:
        stop_role(collector), stop_role(sink), stop_role(worker)

    needles = {f for r in raw for f in forms(r)}
    assert len(needles) > 100  # the simulator's customers had emails and phones

    def leaks(text: str) -> set[str]:
        low = text.lower()
        return {n for n in needles if n.lower() in low}

    found: dict[str, set[str]] = {}
    for topic in [*ALL_TOPICS, state_topic(s.app_id), merge_state_topic(s.app_id)]:
        blob = []
        for m in read_to_end(kafka, topic, timeout=60):
            blob.append((m.value() or b"").decode("latin-1"))
            blob += [(v or b"").decode("latin-1") for _, v in (m.headers() or [])]
        if hit := leaks("\n".join(blob)):
            found[f"topic {topic}"] = hit
    for log in s.data_dir.rglob("*.log"):
        if hit := leaks(log.read_text(errors="replace")):
            found[f"log {log.name}"] = hit
    with clickhouse(s) as c:
        tables = [r[0] for r in c.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                                        "AND engine NOT LIKE '%View%' "
                                        "AND engine != 'AggregatingMergeTree'").result_rows]
        # (rollups hold only uniqExact states of event/moment ids: no identifiers at all)
        for table in tables:
            rows = c.query(f"SELECT * FROM {table}").result_rows
            if hit := leaks("\n".join(map(repr, rows))):
                found[f"table {table}"] = hit
        landed = c.query("SELECT count() FROM touchpoints WHERE identifiers.email_hash IS NOT NULL").result_rows[0][0]
    assert landed > 100  # hashes landed where the raw values were
    assert not found, {k: sorted(v)[:5] for k, v in found.items()}

