"""Landing (`cem sink`) on the real broker and chdb: both record shapes, corrupt containers,
and a SIGKILL mid-run that must leave exactly one row per event (no FINAL needed)."""
from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter

import fastavro
import pytest
from confluent_kafka import Consumer, Producer

from cem.kafka.connection import KafkaConnection
from cem.kafka.admin import group_lag, partitions_of
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import BatchPublisher, producer_config
from cem.ops.demo import dlq_reasons
from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch, encode_single
from cem.settings import DLQ_TOPIC, TOUCHPOINTS_TOPIC
from cem.sinks.clickhouse.client import connect_settings
from cem.sinks.clickhouse.migrations import apply
from cem.kafka.dlq import DeadLetters
from cem.sinks.landing import Landing, consumer_config
from tests.support.ch import clickhouse
from tests.support.pipeline import dlq_records, rss_mb, start, stop_role, wait_until

pytestmark = pytest.mark.integration
W = default_registry().latest("touchpoint")


def resolved(n: int, seed: int) -> list[dict]:
    now = int(time.time() * 1000)
    out = []
    for e in touchpoints(n, seed=seed, customers=max(10, n // 10), start_ms=now - 3_600_000):
        e["cem"] = {"customer_id": f"c-{e['event_id'][:6]}", "late": False, "processed_at": now}
        out.append(e)
    return out


def landing_lag(s) -> int:
    return group_lag(KafkaConnection.from_settings(s), f"{s.app_id}-landing", [TOUCHPOINTS_TOPIC])


def counts(s) -> tuple[int, int]:
    with clickhouse(s) as c:
        return tuple(c.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows[0])


def test_mixed_batch_and_single_records_land_their_union_once_and_corrupt_ones_go_to_dlq(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    batch_events, single_events = resolved(3_000, 1), resolved(300, 2)
    producer = Producer(producer_config(kafka))
    parts = partitions_of(kafka, [TOUCHPOINTS_TOPIC])
    pub = BatchPublisher(producer, W.parsed, parts, max_events=200)
    singles = iter(single_events)
    for i, e in enumerate(batch_events):
        pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
        if i % 10 == 0:  # interleave single-event records with the batches
            one = next(singles)
            key = one["cem"]["customer_id"].encode()
            producer.produce(TOUCHPOINTS_TOPIC, encode_single(one, W.id, W.parsed), key,
                             partition=partition_for(key, parts[TOUCHPOINTS_TOPIC]))
    good = encode_batch(resolved(40, 3), W.parsed)
    other = fastavro.parse_schema({"type": "record", "name": "Other", "fields": [{"name": "n", "type": "long"}]})
    foreign = io.BytesIO()
    fastavro.writer(foreign, other, [{"n": 1}])
    corrupt = [good[: len(good) - 100], good[:-16] + bytes(16), foreign.getvalue()]
    for value in corrupt:
        producer.produce(TOUCHPOINTS_TOPIC, value, partition=0)
    pub.flush()

    sink = start("sink", s)
    try:
        wait_until(lambda: landing_lag(s) == 0, 120, what="landing", procs=(sink,))
    finally:
        stop_role(sink)
    expected = {e["event_id"] for e in batch_events} | {e["event_id"] for e in single_events}
    with clickhouse(s) as c:
        got = [r[0] for r in c.query("SELECT event_id FROM touchpoints").result_rows]
    assert len(got) == len(set(got)) == len(expected) == 3_300
    assert set(got) == expected
    assert dlq_reasons(kafka) == Counter({"corrupt_batch": 2, "schema_mismatch": 1})


def test_the_sink_logs_rows_landed_and_its_lag_once_per_interval(cem_settings):
    s = cem_settings.model_copy(update={"sink_progress_seconds": 1.0})
    kafka = KafkaConnection.from_settings(s)
    producer = Producer(producer_config(kafka))
    pub = BatchPublisher(producer, W.parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC]), max_events=50)
    for e in resolved(500, 4):
        pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
    pub.flush()
    sink = start("sink", s)
    try:
        wait_until(lambda: landing_lag(s) == 0, 120, what="landing", procs=(sink,))
        time.sleep(2.5)  # at least one line after everything landed
    finally:
        stop_role(sink)
    lines = [ln for ln in (s.data_dir / "sink.log").read_text().splitlines() if "cem.sinks.landing: landed" in ln]
    assert len(lines) >= 2, lines
    rows = [int(ln.split("landed ")[1].split()[0]) for ln in lines]
    assert sum(rows) == 500  # per-interval counts add up to what landed
    assert lines[-1].endswith("(500 rows in all), 0 to the DLQ; lag 0 records"), lines[-1]


def test_a_row_clickhouse_cannot_read_is_dead_lettered_alone_and_its_insert_lands(cem_settings):
    # cem.touchpoints is cem's own topic, but what a producer with access writes there reaches
    # ClickHouse undecoded: a varint of 11 bytes (fastavro reads it, ClickHouse's Avro reader
    # refuses it) made landing retry that insert forever; then it dead-lettered the whole insert
    # (good rows too). Now the refused insert is halved until the one row is found: it alone is
    # dead-lettered, with ClickHouse's reason, and every other row of the insert lands.
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    ev = resolved(1, 4)[0]

    def datum_of(e):
        b = io.BytesIO()
        fastavro.schemaless_writer(b, W.parsed, e)
        return b.getvalue()
    datum = datum_of(ev)
    head = io.BytesIO()  # received_at is the fifth field: find where it starts
    for name in ("event_id", "event_type", "channel", "occurred_at"):
        fastavro.schemaless_writer(head, {"type": "record", "name": "H", "fields": [
            {"name": name, "type": "long" if name == "occurred_at" else "string"}]}, {name: ev[name]})
    at = len(head.getvalue())
    canonical = io.BytesIO()
    fastavro.schemaless_writer(canonical, {"type": "record", "name": "L", "fields": [{"name": "v", "type": "long"}]},
                               {"v": ev["received_at"]})
    size = len(canonical.getvalue())
    padded = bytes(b | 0x80 for b in canonical.getvalue()) + b"\x80" * (10 - size) + b"\x00"  # 11 bytes
    loose = datum[:at] + padded + datum[at + size:]
    assert fastavro.schemaless_reader(io.BytesIO(loose), W.parsed, None)["received_at"] == ev["received_at"]
    from cem.schemas import ocf
    from cem.schemas.serde import container_schema_json

    neighbours = resolved(99, 7)  # the bad row sits in the middle of one block of 100
    block = b"".join(map(datum_of, neighbours[:49])) + loose + b"".join(map(datum_of, neighbours[49:]))
    poisoned = ocf.assemble(container_schema_json(W.parsed), [(100, block)], b"p" * 16)
    producer = Producer(producer_config(kafka))
    later = resolved(50, 5)  # records of every partition, in the same insert
    pub = BatchPublisher(producer, W.parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC]), max_events=5)
    for e in later:
        pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
    pub.flush()
    delivered = []
    producer.produce(TOUCHPOINTS_TOPIC, poisoned, partition=0, on_delivery=lambda err, m: delivered.append(m))
    producer.flush(30)
    assert delivered[0].offset() > 0  # not the first record of the insert's first range
    sink = start("sink", s)
    try:
        wait_until(lambda: landing_lag(s) == 0, 120, what="landing", procs=(sink,))
    finally:
        stop_role(sink)
    assert counts(s) == (149, 149)
    with clickhouse(s) as c:
        got = {r[0] for r in c.query("SELECT event_id FROM touchpoints").result_rows}
    assert got == {e["event_id"] for e in neighbours + later}
    letters = dlq_records(kafka)
    assert [h["cem-reason"] for h, _ in letters] == ["insert_rejected"]
    [(headers, value)] = letters
    assert [e["event_id"] for e in fastavro.reader(io.BytesIO(value))] == [ev["event_id"]]
    assert "avro" in headers["cem-detail"].lower() and "1 rows" in headers["cem-detail"]
    assert (headers["cem-source-partition"], headers["cem-source-offset"]) == ("0", str(delivered[0].offset()))


@pytest.mark.slow
def test_sigkill_of_landing_during_200k_events_then_restart_lands_each_once(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    events = resolved(200_000, 4)
    producer = Producer(producer_config(kafka))
    pub = BatchPublisher(producer, W.parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC]))

    def produce_in_waves() -> None:  # traffic keeps arriving while the sink runs and dies
        for start_at in range(0, len(events), 10_000):
            for e in events[start_at:start_at + 10_000]:
                pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
            pub.flush()
            time.sleep(0.2)

    feeder = threading.Thread(target=produce_in_waves)
    sink = start("sink", s, "sink-1", CEM_SINK_MAX_ROWS="7000", CEM_SINK_INSERT_THREADS="2")
    feeder.start()
    try:
        wait_until(lambda: 0 < landing_committed(s) < len(events) // 2, 120, interval=0.05,
                   what="landing to make progress", procs=(sink,))
        os.killpg(sink.pid, signal.SIGKILL)
        sink.wait()
        committed_at_kill = landing_committed(s)
        feeder.join()
        sink = start("sink", s, "sink-2", CEM_SINK_MAX_ROWS="7000", CEM_SINK_INSERT_THREADS="2")
        wait_until(lambda: landing_lag(s) == 0, 180, what="landing after restart", procs=(sink,))
    finally:
        feeder.join()
        stop_role(sink)
    assert 0 < committed_at_kill  # the kill fell mid-run, after some inserts were committed
    assert counts(s) == (len(events), len(events))


class Crash(Exception):
    pass


class LandingKilledBeforeCommit(Landing):
    """Landing that dies like a SIGKILL at a chosen point: after every insert of a cut is in
    ClickHouse, before the cut's offsets are committed, once a cut has an insert covering
    several partitions with more than max_rows rows (a group `split_rows` could split again)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inserted: list = []
        self.crashed_on: list = []

    def _insert(self, table, ins):
        super()._insert(table, ins)
        self.inserted.append(ins)

    def _commit(self, offsets, patience=300.0):
        if not any(tp.metadata for tp in offsets):  # the commit after a cut's inserts
            risky = [i for i in self.inserted if len(i.ranges) >= 2 and i.rows > self._max_rows]
            if risky:
                self.crashed_on = risky
                raise Crash
            self.inserted.clear()
        super()._commit(offsets, patience)


def test_a_restart_after_inserts_before_their_commit_re_forms_each_insert_and_lands_each_event_once(cem_settings):
    # deterministic form of the SIGKILL test's window (which once landed 7,468 rows twice in
    # CI): a cut's group larger than max_rows over several partitions was split again on replay.
    # 4 partitions of ~5,000 events; a cut is due at 12,000 rows (2 threads x 6,000), so it
    # spans partitions and one of its two groups is larger than max_rows
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    events = resolved(20_000, 6)
    producer = Producer(producer_config(kafka))
    pub = BatchPublisher(producer, W.parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC]), max_events=100)
    for e in events:
        pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
    pub.flush()
    client = connect_settings(s)
    apply(client)
    client.command("SYSTEM STOP MERGES touchpoints")  # a merge would hide rows landed twice
    try:
        def landing(cls):
            consumer = Consumer(consumer_config(kafka, f"{s.app_id}-landing"))
            dead = DeadLetters(producer, DLQ_TOPIC, "landing")
            return cls(client, consumer, dead, default_registry(), {TOUCHPOINTS_TOPIC: "touchpoints"},
                       max_rows=6_000, max_seconds=60.0, insert_threads=2)
        crashing = landing(LandingKilledBeforeCommit)
        with pytest.raises(Crash):
            crashing.run(lambda: False, idle_exit=5.0)
        assert crashing.crashed_on  # the inserts were in, their offsets not committed
        in_before_restart = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
        assert 0 < in_before_restart < len(events)
        landing(Landing).run(lambda: False, idle_exit=3.0)
        got = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows[0]
    finally:
        client.close()
    assert tuple(got) == (len(events), len(events))  # no FINAL: the replayed inserts were dropped
    assert landing_lag(s) == 0


def landing_committed(s) -> int:
    """Events' records committed by the landing group so far (in records)."""
    from tests.support.pipeline import end_offsets
    return end_offsets(KafkaConnection.from_settings(s), TOUCHPOINTS_TOPIC) - landing_lag(s)


def test_clickhouse_outage_stops_consumption_memory_stays_flat_then_everything_lands_once(cem_settings, tmp_path):
    """Backpressure (issue 11): while ClickHouse is unavailable the sink stops consuming instead of
    buffering — its lag grows with the traffic, its memory does not — and when ClickHouse is back
    every event lands exactly once."""
    faults = tmp_path / "faults"
    faults.mkdir()
    s = cem_settings.model_copy(update={"fault_injection_dir": faults})
    kafka = KafkaConnection.from_settings(s)
    (faults / "clickhouse_down").touch()
    producer = Producer(producer_config(kafka))
    pub = BatchPublisher(producer, W.parsed, partitions_of(kafka, [TOUCHPOINTS_TOPIC]))
    waves = [resolved(30_000, 10 + i) for i in range(6)]
    sink = start("sink", s, "sink", CEM_SINK_MAX_ROWS="5000")
    try:
        samples, lags = [], []
        for wave in waves:  # 180,000 events arrive during the outage
            for e in wave:
                pub.publish(TOUCHPOINTS_TOPIC, e["cem"]["customer_id"].encode(), e)
            pub.flush()
            time.sleep(3)
            samples.append(rss_mb(sink.pid))
            lags.append(landing_lag(s))
        assert sink.poll() is None  # the outage did not kill it
        assert lags == sorted(lags) and lags[-1] > lags[0]  # lag grows: the traffic waits in Kafka
        warm = samples[1]
        assert max(samples[1:]) - warm < 40, samples  # memory flat: not buffering the backlog
        (faults / "clickhouse_down").unlink()
        wait_until(lambda: landing_lag(s) == 0, 180, what="landing after the outage", procs=(sink,))
    finally:
        stop_role(sink)
    total = sum(len(w) for w in waves)
    assert counts(s) == (total, total)
    print(f"sink RSS during the outage (MB): {[round(x) for x in samples]}; lag: {lags}")
