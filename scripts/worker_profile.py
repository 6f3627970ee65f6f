"""Offline cost of the worker's three stages per event, in one process and without a broker:
simulator traffic as raw containers → `Ingest` → `Coordinator` (what ingest sent it) → the
customer stage (what both sent it), each stage timed on its own. A recording producer stands in
for Kafka (every record kept, every delivery acknowledged at once); ingest looks identifiers up
in the coordinator's own graph (a replica that never lags). Prints µs per event of
each stage and, with --profile STAGE, cProfile's top functions of that stage.

    .venv/bin/python scripts/worker_profile.py [--events 30000] [--batch 100] [--profile stage]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any, Callable

from cem.connectors.generate import batch_records
from cem.identity import IdentityGraph
from cem.kafka.dlq import DeadLetters
from cem.kafka.json_publisher import JsonRowPublisher
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import BatchPublisher
from cem.ops.bench import replayed, simulated
from cem.playbooks import load_playbooks
from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.settings import (ALERTS_TOPIC, CUSTOMERS_TOPIC, DLQ_TOPIC, IDENTITY_LINKS_TOPIC, JOURNEYS_TOPIC,
                          MOMENTS_TOPIC, RAW_TOPICS, SESSIONS_TOPIC, STAGE_TOPIC, TOUCHPOINTS_TOPIC, Settings)
from cem.streams.agents.customers import timers_for
from cem.streams.coordinator import Coordinator
from cem.streams.customers import CustomerStage, decode_state, encode_state
from cem.streams.ingest import Ingest
from cem.streams.merge_book import decode_book, encode_book
from cem.streams.state import KeyedState

PARTS = 4


class RecordingProducer:
    """confluent-kafka's Producer as far as cem's publishers use it; keeps every record."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, Any, Any, Any]] = []
        self._callbacks: list[Callable] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1,
                headers: Any = None, on_delivery: Callable | None = None, **_: Any) -> None:
        if partition < 0:
            partition = partition_for(key or b"", PARTS) if topic != IDENTITY_LINKS_TOPIC else 0
        self.records.append((topic, partition, key, value, headers))
        if on_delivery is not None:
            self._callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        calls, self._callbacks = self._callbacks, []
        for cb in calls:
            cb(None, None)
        return len(calls)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return 0

    def take(self, topic: str) -> list[tuple[str, int, Any, Any, Any]]:
        mine = [r for r in self.records if r[0] == topic]
        self.records = [r for r in self.records if r[0] != topic]
        return mine


def raw_records(n: int, batch: int) -> list[tuple[str, int, bytes]]:
    """The bench's replay (a simulated week ending a minute ago) as raw containers of `batch`."""
    now = int(time.time() * 1000)
    events = replayed(simulated(n, seed=2, end_ms=now), now - 60_000)
    return batch_records(events, default_registry(), {t: PARTS for t in RAW_TOPICS.values()}, max_events=batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--profile", choices=["ingest", "coordinator", "stage"], default=None)
    args = ap.parse_args()
    reg = default_registry()
    schema = reg.latest("touchpoint").parsed
    topics = {t: PARTS for t in (TOUCHPOINTS_TOPIC, STAGE_TOPIC, SESSIONS_TOPIC, JOURNEYS_TOPIC, MOMENTS_TOPIC,
                                 ALERTS_TOPIC, CUSTOMERS_TOPIC)}
    topics[IDENTITY_LINKS_TOPIC] = 1
    records = raw_records(args.events, args.batch)
    graph = IdentityGraph()

    kp = RecordingProducer()
    ingest = Ingest(reg, BatchPublisher(kp, schema, topics), DeadLetters(kp, DLQ_TOPIC, "ingest"),
                    TOUCHPOINTS_TOPIC, 30 * 86_400_000, lookup=graph.lookup, links_topic=IDENTITY_LINKS_TOPIC,
                    stage_topic=STAGE_TOPIC)
    cp = RecordingProducer()
    coordinator = Coordinator(graph, reg, cp, BatchPublisher(cp, schema, topics), DeadLetters(cp, DLQ_TOPIC, "id"),
                              TOUCHPOINTS_TOPIC, PARTS, stage_topic=STAGE_TOPIC)
    sp = RecordingProducer()
    rows = JsonRowPublisher(sp, topics)
    settings = Settings()  # the worker's state bounds, so its timer store too (timers_for)
    state_bytes = int(settings.worker_live_state_mb * 2**20)
    table = KeyedState(encode_state, decode_state, lambda p: iter(()), lambda p, k, v: rows.produce("state", p, k, v),
                       max_live=settings.worker_live_customers, max_live_bytes=state_bytes)
    merges = KeyedState(encode_book, decode_book, lambda p: iter(()), lambda p, k, v: rows.produce("merges", p, k, v),
                        max_live=settings.worker_live_customers, max_live_bytes=state_bytes // 16)
    stage = CustomerStage(table, reg, rows, lambda key, msg: None, rules=load_rules(None), routes=load_routes(None),
                          playbooks=load_playbooks(None), merges=merges, dead=DeadLetters(sp, DLQ_TOPIC, "customers"),
                          timers=timers_for(table, settings.worker_live_customers))
    spent = {"ingest": 0.0, "coordinator": 0.0, "stage": 0.0}
    profiles = {k: cProfile.Profile() for k in spent}

    def timed(name: str, fn: Callable[..., None], *fn_args: Any) -> None:
        prof = profiles[name] if args.profile == name else None
        t = time.perf_counter()
        if prof is not None:
            prof.enable()
        fn(*fn_args)
        if prof is not None:
            prof.disable()
        spent[name] += time.perf_counter() - t

    def run_ingest(group: list[tuple[str, int, bytes]], offset: int) -> None:
        for topic, p, value in group:
            ingest.process(value, topic, p, offset, None, b"")
        ingest.flush()

    def run_coordinator(links: list, offset: int) -> None:
        for _, p, key, value, headers in links:
            coordinator.process(value, IDENTITY_LINKS_TOPIC, p, offset, headers, key)
        coordinator.flush()

    def run_stage(stage_in: list, offset: int) -> None:
        for _, p, key, value, headers in stage_in:
            stage.process(value, STAGE_TOPIC, p, offset, headers, key)
        stage.flush()

    for offset, i in enumerate(range(0, len(records), 16)):  # a group commit: 16 raw records, then the rest
        timed("ingest", run_ingest, records[i:i + 16], offset)
        links = kp.take(IDENTITY_LINKS_TOPIC)
        stage_in = kp.take(STAGE_TOPIC)
        kp.records.clear()
        timed("coordinator", run_coordinator, links, offset)
        stage_in += cp.take(STAGE_TOPIC)
        cp.records.clear()
        timed("stage", run_stage, stage_in, offset)
        sp.records.clear()
    n = args.events
    total = sum(spent.values())
    print(f"{n} events in raw records of {args.batch}: " + ", ".join(
        f"{k} {v / n * 1e6:.1f} µs/event" for k, v in spent.items()) + f"; all {total / n * 1e6:.1f} µs/event "
        f"({n / total:,.0f} events/s); the coordinator decided {ingest.counts.to_coordinator} events")
    if args.profile:
        pstats.Stats(profiles[args.profile]).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
