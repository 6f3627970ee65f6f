"""Issue 3 on the real broker and chdb: valid events land once, malformed ones reach the DLQ
with their reason, replays and crashes never duplicate rows."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import MALFORMED_KINDS, malformed, publish_events, publish_raw
from cem.kafka.admin import partitions_of
from cem.ops.demo import dlq_reasons
from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.events import CHANNELS
from cem.settings import RAW_TOPICS, TOUCHPOINTS_TOPIC
from tests.support.ch import clickhouse
from tests.support.pipeline import end_offsets, start, stop_role, wait_caught_up, wait_until

pytestmark = pytest.mark.integration
REG = default_registry()


def publish(settings, n: int, seed: int = 1) -> list[str]:
    now = int(time.time() * 1000)
    events = list(touchpoints(n, customers=max(10, n // 20), seed=seed, start_ms=now - 3_600_000))
    parts = partitions_of(KafkaConnection.from_settings(settings), list(RAW_TOPICS.values()))
    publish_events(KafkaConnection.from_settings(settings), events, REG, parts)
    return [e["event_id"] for e in events]


def landed(settings) -> tuple[int, int, int, Counter]:
    with clickhouse(settings) as c:
        final = c.query("SELECT count() FROM touchpoints FINAL").result_rows[0][0]
        distinct = c.query("SELECT uniqExact(event_id) FROM touchpoints").result_rows[0][0]
        dup = c.query("SELECT count() FROM (SELECT event_id FROM touchpoints FINAL "
                      "GROUP BY event_id HAVING count() > 1)").result_rows[0][0]
        per_channel = Counter(dict(c.query("SELECT channel, count() FROM touchpoints FINAL "
                                           "GROUP BY channel").result_rows))
    return final, distinct, dup, per_channel


def run_until_landed(settings) -> tuple[int, int, int, Counter]:
    """Run a worker and a sink until everything published is landed; then what `landed` says."""
    worker, sink = start("worker", settings), start("sink", settings)
    try:
        wait_caught_up(settings, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    return landed(settings)


def test_valid_events_land_once_and_malformed_reach_the_dlq_with_reasons(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    ids = publish(s, 10_000)
    template = next(touchpoints(1, seed=99, start_ms=int(time.time() * 1000) - 60_000))
    kinds = list(MALFORMED_KINDS)
    bad = [malformed(kinds[i % 5], dict(template, event_id=f"bad-{i}"), REG) for i in range(100)]
    publish_raw(kafka, RAW_TOPICS["web"], bad[:50])
    publish_raw(kafka, RAW_TOPICS["phone"], bad[50:])

    final, distinct, dup, per_channel = run_until_landed(s)
    assert (final, distinct, dup) == (10_000, 10_000, 0)
    # the generator deals events round-robin over the channels
    assert per_channel == Counter({ch: len(range(i, 10_000, len(CHANNELS))) for i, ch in enumerate(CHANNELS)})
    assert set(per_channel) == set(RAW_TOPICS)
    with clickhouse(s) as c:
        got = {r[0] for r in c.query("SELECT event_id FROM touchpoints").result_rows}
    assert got == set(ids)
    assert dlq_reasons(kafka) == Counter({reason: 20 for reason in MALFORMED_KINDS.values()})

    # Replay: a worker with a fresh consumer group reads every raw record again.
    replay_group = f"{s.app_id}-replay"
    worker = start("worker", s, "worker-replay", CEM_APP_ID=replay_group)
    sink = start("sink", s, "sink-2")
    try:
        wait_until(lambda: end_offsets(kafka, TOUCHPOINTS_TOPIC) > 0, 30)
        wait_caught_up(s, (worker, sink), worker_group=replay_group)
    finally:
        stop_role(sink), stop_role(worker)
    final, distinct, dup, _ = landed(s)
    assert (final, distinct, dup) == (10_000, 10_000, 0)


def test_sigkill_of_the_worker_mid_landing_loses_and_duplicates_nothing(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    ids = publish(s, 50_000, seed=2)
    worker, sink = start("worker", s), start("sink", s)
    try:
        # kill once a part of the output exists, well before all of it
        wait_until(lambda: end_offsets(kafka, TOUCHPOINTS_TOPIC) >= 15, 120,
                   interval=0.02, what="the worker to start forwarding", procs=(worker,))
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        forwarded_before_kill = end_offsets(kafka, TOUCHPOINTS_TOPIC)
        worker = start("worker", s, "worker-2")
        wait_caught_up(s, (worker, sink))
    finally:
        stop_role(sink), stop_role(worker)
    assert forwarded_before_kill < 50_000 // 500 + 8  # the kill did land mid-run
    final, distinct, dup, _ = landed(s)
    assert (final, distinct, dup) == (50_000, 50_000, 0)
    with clickhouse(s) as c:
        assert {r[0] for r in c.query("SELECT event_id FROM touchpoints").result_rows} == set(ids)


def test_bytes_written_loosely_land_as_the_worker_read_them(cem_settings):
    # Avro that fastavro reads but ClickHouse would refuse as written: a boolean byte of 5 (read as
    # true) and a varint of 11 bytes (ClickHouse reads at most 10). Ingest re-encodes what it
    # forwards, so both
    # land, with the values the worker saw, beside the well-formed events of the same topics.
    import io
    import fastavro
    from cem.schemas.serde import encode_single
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    w = REG.latest("touchpoint")
    now = int(time.time() * 1000)
    ids = publish(s, 200)

    def body(ev):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, w.parsed, ev)
        return out.getvalue()

    call = next(e for e in touchpoints(400, seed=5, start_ms=now - 60_000, channels=("phone",))
                if e["phone"] and e["phone"].get("resolved") is not None)
    call = dict(call, event_id="loose-bool", phone=dict(call["phone"], resolved=True))
    yes, no = body(call), body(dict(call, phone=dict(call["phone"], resolved=False)))
    at = next(i for i, (a, b) in enumerate(zip(yes, no, strict=True)) if a != b)
    loose_bool = yes[:at] + b"\x05" + yes[at + 1:]
    visit = next(e for e in touchpoints(400, seed=6, start_ms=now - 60_000, channels=("store",))
                 if e["store"] and e["store"].get("wait_seconds") is not None)
    visit = dict(visit, event_id="loose-varint", store=dict(visit["store"], wait_seconds=5))
    five, six = body(visit), body(dict(visit, store=dict(visit["store"], wait_seconds=6)))
    at = next(i for i, (a, b) in enumerate(zip(five, six, strict=True)) if a != b)
    assert five[at] == 0x0A  # zigzag(5), one byte
    loose_varint = five[:at] + b"\x8a" + b"\x80" * 9 + b"\x00" + five[at + 1:]  # the same 5 in 11 bytes
    header = encode_single(call, w.id, w.parsed)[:5]
    for topic, value in ((RAW_TOPICS["phone"], header + loose_bool), (RAW_TOPICS["store"], header + loose_varint)):
        read = fastavro.schemaless_reader(io.BytesIO(value[5:]), w.parsed, None)  # as the worker reads them
        assert (read["store"] or {}).get("wait_seconds") == 5 or (read["phone"] or {}).get("resolved") is True
        publish_raw(kafka, topic, [value])
    # a receipt time that cannot be one (never set, or far beyond any clock): ingest sets its own
    for name, received in (("received-zero", 0), ("received-far", 2 ** 62)):
        publish_raw(kafka, RAW_TOPICS["store"],
                    [encode_single(dict(visit, event_id=name, received_at=received), w.id, w.parsed)])

    final, distinct, dup, _ = run_until_landed(s)
    after = int(time.time() * 1000)
    assert (final, distinct, dup) == (204, 204, 0)
    with clickhouse(s) as c:
        got = {r[0] for r in c.query("SELECT event_id FROM touchpoints").result_rows}
        assert got == set(ids) | {"loose-bool", "loose-varint", "received-zero", "received-far"}
        assert c.query("SELECT phone.resolved FROM touchpoints WHERE event_id = 'loose-bool'").result_rows == [(True,)]
        assert c.query("SELECT store.wait_seconds FROM touchpoints "
                       "WHERE event_id = 'loose-varint'").result_rows == [(5,)]
        received = dict(c.query("SELECT event_id, toUnixTimestamp64Milli(received_at) FROM touchpoints "
                                "WHERE event_id IN ('received-zero', 'received-far', 'loose-varint')").result_rows)
    assert all(now <= received[name] <= after for name in ("received-zero", "received-far")), received
    assert received["loose-varint"] == visit["received_at"]  # a plausible one is kept
    assert dlq_reasons(kafka) == Counter()
