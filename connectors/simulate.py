"""`cem simulate`: run the simulator to Kafka (batch records on cem.raw.<channel>) or to a file,
and write the ground truth beside the run:

  <out>/events.jsonl         (with --to file) every touchpoint, in emission order
  <out>/truth_events.jsonl   event_id → true customer, true session, channel, persona
  <out>/truth_moments.jsonl  injected negative moments: rule, customer, time, evidence, recovered
  <out>/summary.json         counts per channel, per rule, recovery share

Emails and phones are pseudonymized with the deployment's key exactly as connectors do.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cem.identity import customer_key
from cem.settings import RAW_TOPICS, Settings
from cem.sim.simulator import SimConfig, Simulator
from .pseudonymize import Pseudonymizer


@dataclass
class SimulationResult:
    events: int
    seconds: float
    per_channel: Counter
    per_rule: Counter
    recovered: int
    out_dir: Path


#: How long the last flush waits for Kafka's acknowledgements (librdkafka's message.timeout.ms).
FLUSH_SECONDS = 300.0


def _hasher(settings: Settings) -> Callable[[str, str], str]:
    pz = Pseudonymizer(settings.pseudonymization_key.get_secret_value().encode())
    return lambda kind, raw: pz.email_hash(raw) if kind == "email" else pz.phone_hash(raw)


def simulate(settings: Settings, cfg: SimConfig, out_dir: Path, to: str = "kafka",
             rate: float | None = None, progress: Callable[[int], None] | None = None) -> SimulationResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = Simulator(cfg, _hasher(settings))
    per_channel: Counter = Counter()
    started = time.perf_counter()
    sink: Any
    if to == "kafka":
        from confluent_kafka import Producer
        from cem.kafka.admin import partitions_of
        from cem.kafka.connection import KafkaConnection
        from cem.kafka.publisher import BatchPublisher, producer_config
        from cem.schemas.registry import default_registry
        w = default_registry().latest("touchpoint")
        kafka = KafkaConnection.from_settings(settings)
        pub = BatchPublisher(Producer(producer_config(kafka)), w.parsed,
                             partitions_of(kafka, list(RAW_TOPICS.values())),
                             max_events=settings.publisher_max_events, linger_ms=settings.publisher_linger_ms)

        def sink(ev: dict) -> None:
            pub.publish(RAW_TOPICS[ev["channel"]], customer_key(ev["identifiers"]).encode(), ev)
    elif to == "file":
        fh = open(out_dir / "events.jsonl", "w")

        def sink(ev: dict) -> None:
            fh.write(json.dumps(ev, sort_keys=True, separators=(",", ":")) + "\n")
    else:
        raise ValueError(f"--to must be kafka or file, not {to!r}")
    n = 0
    for ev in sim.run():
        sink(ev)
        per_channel[ev["channel"]] += 1
        n += 1
        if n % 2000 == 0:
            if to == "kafka":
                pub.poll()
            if progress:
                progress(2000)
            if rate:
                ahead = n / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    if to == "kafka":
        # a broker restarting under load can take a minute: wait as long as librdkafka keeps
        # re-sending (message.timeout.ms, 300 s), as every cem producer rides out an outage
        pub.flush(FLUSH_SECONDS)
    else:
        fh.close()
    if progress:
        progress(n % 2000)
    elapsed = time.perf_counter() - started
    _write_jsonl(out_dir / "truth_events.jsonl", sim.truth.events)
    _write_jsonl(out_dir / "truth_moments.jsonl", sim.truth.moments)
    per_rule = Counter(m["rule"] for m in sim.truth.moments)
    recovered = sum(1 for m in sim.truth.moments if m["recovered"])
    (out_dir / "summary.json").write_text(json.dumps({
        "events": n, "per_channel": dict(sorted(per_channel.items())), "customers": cfg.customers,
        "days": cfg.days, "seed": cfg.seed, "start_ms": cfg.start_ms,
        "moments": dict(sorted(per_rule.items())), "recovered": recovered}, indent=2, sort_keys=True))
    return SimulationResult(n, elapsed, per_channel, per_rule, recovered, out_dir)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n")
