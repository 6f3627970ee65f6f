"""The customer agent: cem.stage (or cem.touchpoints with CEM_STAGE_HOP=avro) → sessions,
journeys, negative moments and alerts.

State: a `KeyedState` holding a Timeline per customer (live objects in memory), made durable in
the compacted topic `<app_id>-customer-state` (same partition count as cem.touchpoints; a key
lives in the partition of the record that wrote it); merge bookkeeping likewise in a table and
topic of its own, `<app_id>-customer-merges`. The changelog records of a group of input records
are produced with the same confluent-kafka producer as the output rows and flushed with them
before the input is acked; a partition is restored from its changelog before its first
record after an assignment and forgotten when it is revoked. Event time arrives as `watermark`
control records from the coordinator (whose ticker notices idle sources when no records come).
A control record that does not decode goes to cem.dlq (reason unknown_control, bad_control, ...).
"""
from __future__ import annotations

import threading
import time

import faust
from confluent_kafka import Producer

from cem.kafka.connection import KafkaConnection
from cem.kafka.dlq import DeadLetters
from cem.kafka.json_publisher import JsonRowPublisher
from cem.kafka.admin import ensure_topics, partitions_of
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import producer_config
from cem.kafka.topic_reader import read_to_end
from cem.schemas.registry import default_registry
from cem import metrics
from cem.playbooks import load_playbooks
from cem.rules import load_routes, load_rules
from cem.settings import (ALERTS_TOPIC, CUSTOMERS_TOPIC, DLQ_TOPIC, JOURNEYS_TOPIC, MOMENTS_TOPIC, SESSIONS_TOPIC,
                          TOUCHPOINTS_TOPIC, Settings, merge_state_topic, stage_topic, state_topic)
from cem.streams.control import ControlMessage, encode as encode_control
from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
from cem.streams.merge_book import decode_book, encode_book
from cem.streams.state import KeyedState
from cem.streams.timers import BoundedTimers, HeapTimers, Timers
from .ingest import run_agent


def report_gauges(stage: CustomerStage, every: float = 5.0) -> None:
    """Watermark lag and customers held per partition, for Prometheus, every `every` seconds."""
    while True:
        time.sleep(every)
        try:
            gauges = stage.gauges()
        except RuntimeError:  # the stage changed a dict while we copied it: next time
            continue
        now = time.time()
        metrics.STATE_LIVE.set(stage.table.live)
        metrics.STATE_LIVE_BYTES.set(stage.table.live_bytes)
        metrics.STATE_EVICTED.set(stage.table.evicted)
        for p, (wm, held) in gauges.items():
            metrics.STATE_CUSTOMERS.labels(str(p)).set(held)
            if wm is not None:
                metrics.WATERMARK_LAG.labels(str(p)).set(max(0.0, now - wm / 1000))


def timers_for(table: KeyedState, live_customers: int) -> Timers:
    """Bounded state, bounded timers: when the table spills, at most the live bound's number of
    deadlines (50,000 with only a byte bound) are held in memory; beyond it they all live in the
    scratch file, with a cache of that size in front (`BoundedTimers`)."""
    return BoundedTimers(live_customers or 50_000) if table.spills else HeapTimers()


def attach_customers(app: faust.App, touchpoints: faust.TopicT, settings: Settings,
                     kafka: KafkaConnection) -> None:
    state: dict[str, CustomerStage] = {}
    changelog = state_topic(settings.app_id)
    merge_log = merge_state_topic(settings.app_id)
    stage_in = stage_topic(settings)

    def build() -> CustomerStage:
        producer = Producer(producer_config(kafka))
        parts = partitions_of(kafka, [SESSIONS_TOPIC, JOURNEYS_TOPIC, TOUCHPOINTS_TOPIC, stage_in,
                                      MOMENTS_TOPIC, ALERTS_TOPIC, CUSTOMERS_TOPIC])
        rows = JsonRowPublisher(producer, parts)
        ensure_topics(kafka, {changelog: parts[TOUCHPOINTS_TOPIC], merge_log: parts[TOUCHPOINTS_TOPIC]},
                      config={"cleanup.policy": "compact"})

        def loader(topic: str):  # noqa: ANN202
            def load(p: int):  # noqa: ANN202
                return ((m.key(), m.value()) for m in read_to_end(kafka, topic, [p], 600))
            return load

        state_bytes = int(settings.worker_live_state_mb * 2**20)
        table = KeyedState(encode_state, decode_state, loader(changelog),
                           lambda p, key, value: rows.produce(changelog, p, key, value),
                           max_live=settings.worker_live_customers, max_live_bytes=state_bytes)
        # a book is ~50 bytes: a sixteenth of the byte budget holds millions of merges
        merges = KeyedState(encode_book, decode_book, loader(merge_log),
                            lambda p, key, value: rows.produce(merge_log, p, key, value),
                            max_live=settings.worker_live_customers, max_live_bytes=state_bytes // 16)

        def send_control(key: str, msg: ControlMessage) -> None:
            # delivery-tracked like the derived rows: the input is not acked unless Kafka took it
            kind, value = encode_control(msg)
            rows.produce(stage_in, partition_for(key.encode(), parts[stage_in]), key.encode(),
                         value, headers=[(CONTROL, kind.encode())])

        stage = CustomerStage(table, default_registry(), rows, send_control,
                              rules=load_rules(settings.rules_file), routes=load_routes(settings.rules_file),
                              playbooks=load_playbooks(settings.playbooks_file),
                              on_moment=metrics.moment, on_recovery=metrics.recovery, on_alert=metrics.alert,
                              timers=timers_for(table, settings.worker_live_customers), merges=merges,
                              dead=DeadLetters(producer, DLQ_TOPIC, "customers", on_dead=metrics.dead_letter))
        threading.Thread(target=report_gauges, args=(stage,), name="cem-gauges", daemon=True).start()
        return stage

    # mode types every handler as (sender, *args, signal=..., **kwargs); faust sends the revoked set
    # as the one positional argument after the sender
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: object, revoked: set, **kwargs: object) -> None:
        stage = state.get("p")
        if isinstance(stage, CustomerStage):
            stage.revoke({tp.partition for tp in revoked if tp.topic == stage_in})

    @app.agent(touchpoints, concurrency=1, name="customers")
    async def customers(stream: faust.StreamT) -> None:
        def make() -> CustomerStage:
            if "p" not in state:
                state["p"] = build()
            return state["p"]
        await run_agent(stream, make)
