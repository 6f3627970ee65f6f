"""Issue 21 §4 on the real broker and chdb: records written with a schema id the registry does
not know are dead-lettered; once the schema is registered (and a too-old event of a batch is
accepted by a wider horizon), `cem dlq replay` sends them back to their source with their key,
they land once, a second replay publishes nothing, and what still fails comes back to cem.dlq
with its new reason and the dead letter it was replayed from."""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time

import fastavro
import pytest
from confluent_kafka import Producer

from cem.kafka.admin import delete_topics
from cem.kafka.connection import KafkaConnection
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import producer_config
from cem.ops.procs import settings_env
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch, encode_single
from cem.settings import DLQ_REPLAYS_TOPIC, RAW_TOPICS
from cem.sim.generator import touchpoints
from tests.support.ch import clickhouse
from tests.support.pipeline import dlq_records, end_offsets, read_topic, start, stop_role, wait_caught_up

pytestmark = pytest.mark.integration
REG = default_registry()
LATEST = REG.latest("touchpoint")
NEW_ID = max(REG.by_id) + 1000  # the id the producer's registry gave its schema
WEB = RAW_TOPICS["web"]


def cem(settings, *args: str) -> str:
    """Run `cem <args>` as a user would, with `settings` as its environment; its output."""
    done = subprocess.run([sys.executable, "-m", "cem", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"cem {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    print(done.stdout)
    return " ".join(done.stdout.split())  # rich wraps long lines


def producer_schema(tmp_path):
    """The producer's new writer schema: the pipeline's plus a field the pipeline does not read."""
    raw = copy.deepcopy(LATEST.raw)
    raw["fields"].append({"name": "tenant", "type": "string"})
    path = tmp_path / "touchpoint-tenant.avsc"
    path.write_text(json.dumps(raw))
    return path, fastavro.parse_schema(raw)


def test_unknown_schema_dead_letters_replay_once_after_registration(cem_settings, tmp_path):
    s = cem_settings.model_copy(update={"schema_registry_file": tmp_path / "site" / "registry.json"})
    kafka = KafkaConnection.from_settings(s)
    avsc, writer = producer_schema(tmp_path)
    now = int(time.time() * 1000)
    parts = s.topic_partitions
    events = list(touchpoints(6, customers=6, seed=21, start_ms=now - 3_600_000, channels=("web",)))
    for ev in events:
        ev["tenant"] = "acme"
    fixable, still_bad = events[:5], dict(events[5], event_type="teleported", event_id="still-bad")
    # a batch from cem's own publisher (no key) with one event older than the accept horizon
    batch = list(touchpoints(3, customers=3, seed=22, start_ms=now - 3_600_000, channels=("web",)))
    batch[1] = dict(batch[1], event_id="too-old", occurred_at=now - 500 * 86_400_000)

    producer = Producer(producer_config(kafka))
    sent: dict[str, tuple[int, bytes | None]] = {}  # event id -> (partition, key)
    for i, ev in enumerate([*fixable, still_bad]):
        key = f"producer-key-{i}".encode() if i % 2 == 0 else None   # some producers send no key
        partition = partition_for(key, parts) if key else i % parts
        producer.produce(WEB, value=encode_single(ev, NEW_ID, writer), key=key, partition=partition)
        sent[ev["event_id"]] = (partition, key)
    producer.produce(WEB, value=encode_batch(batch, LATEST.parsed), partition=0)
    assert producer.flush(30) == 0

    worker, sink = start("worker", s), start("sink", s)
    try:
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(worker), stop_role(sink)
    dead = dlq_records(kafka)
    assert sorted(h["cem-reason"] for h, _ in dead) == ["too_old"] + ["unknown_schema_id"] * 6
    old = next(h for h, _ in dead if h["cem-reason"] == "too_old")
    assert (old["cem-batch-index"], old["cem-source-partition"], old["cem-source-key"]) == ("1", "0", "")
    with clickhouse(s) as c:
        assert c.query("SELECT count() FROM touchpoints FINAL").result_rows[0][0] == 2

    listing = cem(s, "dlq", "list")
    assert "by reason: unknown_schema_id 6, too_old 1" in listing and "7 dead letter(s)" in listing
    shown = cem(s, "dlq", "show", "--reason", "unknown_schema_id", "--limit", "2")
    assert f"wire format, schema id {NEW_ID}" in shown and "2 of 6 shown; 4 more" in shown
    assert "key producer-key-" in shown or "key none" in shown
    raw_before = end_offsets(kafka, WEB)
    delete_topics(kafka, [DLQ_REPLAYS_TOPIC])  # a deployment from before the ledger
    dry = cem(s, "dlq", "replay", "--reason", "unknown_schema_id", "--dry-run")
    assert "6 to replay, 0 skipped (dry run: nothing sent)" in dry
    assert end_offsets(kafka, WEB) == raw_before

    # the fixes: the producer's schema registered, a horizon that accepts the old event
    assert f"as schema id {NEW_ID}" in cem(s, "schemas", "register", str(avsc), "--id", str(NEW_ID))
    worker = start("worker", s, "worker-2", CEM_ACCEPT_HORIZON_DAYS="1000")
    sink = start("sink", s, "sink-2")
    try:
        assert "6 replayed, 0 failed, 0 skipped" in cem(s, "dlq", "replay", "--reason", "unknown_schema_id")
        assert "1 replayed, 0 failed, 0 skipped" in cem(s, "dlq", "replay", "--reason", "too_old", "--since", "1h")
        wait_caught_up(s, (worker, sink))
        raw_after = end_offsets(kafka, WEB)
        assert raw_after == raw_before + 7
        # replaying again publishes nothing
        again = cem(s, "dlq", "replay", "--reason", "unknown_schema_id")
        assert "0 to replay, 6 skipped" in again and "already replayed" in again
        assert "0 to replay, 1 skipped" in cem(s, "dlq", "replay", "--reason", "too_old")
        assert end_offsets(kafka, WEB) == raw_after
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(worker), stop_role(sink)

    # each replayed record went back to its partition with its original key
    replayed = [m for m in read_topic(kafka, WEB) if dict(m.headers() or []).get("cem-replay-of")]
    assert len(replayed) == 7
    by_dlq = {f"cem.dlq:{m.partition()}:{m.offset()}": m.value() for m in read_topic(kafka, "cem.dlq")}
    for m in replayed:
        assert m.value() == by_dlq[dict(m.headers())["cem-replay-of"].decode()]
        if m.value()[:1] == b"\x00" and int.from_bytes(m.value()[1:5], "big") == NEW_ID:
            event_id = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), writer, None)["event_id"]
            assert (m.partition(), m.key()) == sent[event_id], event_id
        else:  # the one event of the batch, re-encoded by ingest; the batch record had no key
            assert (m.partition(), m.key()) == (0, None)
    ledger = read_topic(kafka, DLQ_REPLAYS_TOPIC)  # created by the first replay
    assert len(ledger) == 7 and len({m.key() for m in ledger}) == 7

    with clickhouse(s) as c:
        rows = c.query("SELECT event_id, count() FROM touchpoints GROUP BY event_id").result_rows
        final = c.query("SELECT count() FROM touchpoints FINAL").result_rows[0][0]
    landed = dict(rows)
    expected = {e["event_id"] for e in fixable} | {e["event_id"] for e in batch}
    assert set(landed) == expected and final == len(expected) == 8
    assert all(n == 1 for n in landed.values()), landed  # once each, not only after FINAL

    # the record a fix did not cure is back with its new reason and where it came from
    after = dlq_records(kafka)
    assert len(after) == 8
    back = [h for h, _ in after if h.get("cem-replay-of")]
    assert len(back) == 1 and back[0]["cem-reason"] == "unknown_event_type"
    assert by_dlq[back[0]["cem-replay-of"]] == encode_single(still_bad, NEW_ID, writer)
    assert "1 of them are replayed records that failed again" in cem(s, "dlq", "list", "--reason", "unknown_event_type")
