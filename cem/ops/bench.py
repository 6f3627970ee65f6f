"""`cem bench`: one run, one local broker, the same generated traffic over all five channels.

Stages (issue 9): (a) raw ceiling — confluent-kafka consume + fastavro decode of the raw topics;
(b) naive baseline — a minimal Faust agent, one event per record, Python-row inserts;
(c) cem landing alone — `Landing` over cem.touchpoints into a fresh chdb;
(d) full pipeline — worker + sink processes, first produce to last row committed;
(e) latency at a steady rate — produce time (`received_at`) to row visible (`landed_at`);
(f) peak RSS per process; (g) ratios. Figures are measured in this run only: compare, don't time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cem.settings import IDENTITY_LINKS_TOPIC, RAW_TOPICS, TOUCHPOINTS_TOPIC, Settings, state_topic
from cem.kafka.connection import KafkaConnection

SINGLE_TOPIC = "cem.bench.single"


def _proc_status_mb(pid: int, field: str) -> float:
    """A memory figure (VmHWM = peak, VmRSS = now) of a process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _rss_peak_mb(pid: int) -> float:
    return _proc_status_mb(pid, "VmHWM")


def _rss_now_mb(pid: int) -> float:
    return _proc_status_mb(pid, "VmRSS")


def _raw_ceiling(kafka: KafkaConnection, expected: int) -> tuple[int, float]:
    from confluent_kafka import Consumer, TopicPartition
    from cem.schemas.registry import default_registry
    from cem.schemas.serde import decode_record
    reg = default_registry()
    reader = reg.latest("touchpoint").parsed
    c = Consumer(kafka.client_config(**{"group.id": "cem-bench-raw", "enable.auto.commit": False,
                                        "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20}))
    tps = []
    for t in RAW_TOPICS.values():
        for p in c.list_topics(t, timeout=10).topics[t].partitions:
            tps.append(TopicPartition(t, p, 0))
    c.assign(tps)
    n = 0
    started = None
    while n < expected:
        msgs = c.consume(5000, 1.0)
        if not msgs and started is not None and time.perf_counter() - started > 30:
            break
        if started is None and msgs:
            started = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                n += len(decode_record(m.value(), reg, reader).events)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    return n, elapsed


def _landing_alone(settings: Settings, kafka: KafkaConnection, data_dir: Path) -> tuple[int, float]:
    from confluent_kafka import Consumer, Producer
    from cem.kafka.publisher import producer_config
    from cem.schemas.registry import default_registry
    from cem.sinks.clickhouse.client import connect
    from cem.sinks.clickhouse.migrations import apply
    from cem.kafka.dlq import DeadLetters
    from cem.sinks.landing import Landing, consumer_config
    client = connect(f"chdb://{(data_dir / 'landing-ch').resolve()}")
    apply(client)
    consumer = Consumer(consumer_config(kafka, f"{settings.app_id}-bench-landing"))
    landing = Landing(client, consumer, DeadLetters(Producer(producer_config(kafka)),
                                                    "cem.dlq", "bench"),
                      default_registry(), {TOUCHPOINTS_TOPIC: "touchpoints"},
                      max_rows=settings.sink_max_rows, max_seconds=settings.sink_max_seconds,
                      insert_threads=settings.sink_insert_threads)
    counts = landing.run(lambda: False, idle_exit=2.0)
    rows = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
    client.close()
    return rows, counts.busy_seconds


def _naive(kafka: KafkaConnection, data_dir: Path, n: int, progress: Any) -> tuple[int, float]:
    from confluent_kafka import Producer
    from cem.kafka.publisher import producer_config
    from cem.sim.generator import touchpoints
    from cem.schemas.registry import default_registry
    from cem.schemas.serde import encode_single
    w = default_registry().latest("touchpoint")
    p = Producer(producer_config(kafka, **{"linger.ms": 20}))
    now = int(time.time() * 1000)
    for ev in touchpoints(n, seed=11, start_ms=now - 3_600_000):
        while True:
            try:
                p.produce(SINGLE_TOPIC, encode_single(ev, w.id, w.parsed))
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)
    out = data_dir / "naive.json"
    log = open(data_dir / "naive.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cem.ops.naive", SINGLE_TOPIC, str(n), str(out),
                             f"chdb://{(data_dir / 'naive-ch').resolve()}", kafka.bootstrap],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.exists():
        raise RuntimeError(f"naive baseline produced no result; see {data_dir / 'naive.log'}")
    res = json.loads(out.read_text())
    return res["events"], res["seconds"]


def run_bench(settings: Settings, events: int, as_json: bool, console: Console, *,
              steady_seconds: float = 10.0, steady_rate: int = 5_000, workers: int = 2) -> int:
    from cem.ops import infra

    started_broker = infra.ensure_broker()
    if started_broker is None:
        console.print("[red]could not start the local Kafka broker; see the messages above[/red]")
        return 1
    # (d) replays old traffic: a stall between phases must not be taken for the end of traffic,
    # which would move event time to the wall clock and make the rest of the replay late
    base = settings.model_copy(update={"all_quiet_seconds": max(settings.all_quiet_seconds or 0, 3600.0)})
    settings = infra.fresh_run(base, "bench", extra_topics=[SINGLE_TOPIC],
                               app_id=f"cem-bench-{int(time.time())}")
    data_dir = settings.data_dir
    kafka = KafkaConnection.from_settings(settings)
    r: dict[str, Any] = {"events": events, "machine": _machine(), "stage_hop": settings.stage_hop}

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bench", total=6 + (workers > 1))
        traffic = _pipeline_stages(settings, r, events, 1, steady_seconds, steady_rate, progress, task)
        # (a) raw ceiling over the same raw topics
        progress.update(task, advance=1, description="(a) raw ceiling")
        n, secs = _raw_ceiling(kafka, len(traffic) + 500 + int(steady_rate * steady_seconds))
        r["raw_eps"] = n / secs
        # (c) landing alone over the touchpoints the pipeline produced
        progress.update(task, advance=1, description="(c) cem landing alone")
        n, secs = _landing_alone(settings, kafka, data_dir)
        r["landing_eps"] = n / secs
        r["landing_rows"] = n
        # (b) naive baseline
        progress.update(task, advance=1, description="(b) naive Faust baseline")
        nb = min(events, 20_000)
        n, secs = _naive(kafka, data_dir, nb, progress)
        r["naive_eps"] = n / secs
        progress.update(task, advance=1)
        if workers > 1:
            # (d)/(e) again on fresh topics with N worker processes in one group, N x the rate
            wide = infra.fresh_run(base, f"bench-{workers}w", app_id=f"cem-bench-{int(time.time())}-{workers}w")
            s: dict[str, Any] = {"workers": workers}
            _pipeline_stages(wide, s, events, workers, steady_seconds, steady_rate * workers, progress, task)
            s["pipeline_vs_1_worker"] = s["pipeline_eps"] / r["pipeline_eps"]
            r["scale_out"] = s
    r["ratios"] = {"landing/naive": r["landing_eps"] / r["naive_eps"],
                   "landing/raw": r["landing_eps"] / r["raw_eps"],
                   "pipeline/raw": r["pipeline_eps"] / r["raw_eps"]}
    if "scale_out" in r:
        r["ratios"][f"pipeline {workers} workers/1 worker"] = r["scale_out"]["pipeline_vs_1_worker"]
    if started_broker:
        infra.kafka("down")
    if as_json:
        print(json.dumps(r, indent=2))
    else:
        _print(r, console)
    return 0


def _pipeline_stages(settings: Settings, r: dict[str, Any], events: int, workers: int, steady_seconds: float,
                     steady_rate: int, progress: Any, task: Any) -> list:
    """(d) full pipeline and (e) steady rate with `workers` worker processes (one group) and one
    sink, into `r`; returns the (d) traffic."""
    from cem.connectors.generate import batch_records, publish_events, publish_records
    from cem.kafka.admin import partitions_of
    from cem.ops.procs import pipeline_lag, start_role, stop_role, wait_until
    from cem.schemas.registry import default_registry
    from cem.sim.generator import touchpoints
    data_dir = settings.data_dir
    reg = default_registry()
    kafka = KafkaConnection.from_settings(settings)
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))

    def caught_up() -> bool:
        return pipeline_lag(settings) == 0

    label = f" ({workers} workers)" if workers > 1 else ""
    # (d) full pipeline, with a warm-up so process start-up is not measured
    ws = [start_role("worker", settings, data_dir / (f"worker-{i}.log" if workers > 1 else "worker.log"),
                     **({"CEM_WORKER_METRICS_PORT": str(settings.worker_metrics_port + i)}
                        if settings.worker_metrics_port else {}))
          for i in range(workers)]
    sink = start_role("sink", settings, data_dir / "sink.log")
    procs = (*ws, sink)
    # generated before the clock starts; its last event a minute ago, and the warm-up before its
    # first, so the replay is on time (not late) and event time has caught up with the wall
    # clock when (e) sends live events
    traffic = replayed(simulated(events, seed=2, end_ms=int(time.time() * 1000)), int(time.time() * 1000) - 60_000)
    first = min(ev["occurred_at"] for ev in traffic)
    # encoded before the clock too: producers run elsewhere, their Avro encoding is not the pipeline's
    records = batch_records(traffic, reg, parts)
    publish_events(kafka, touchpoints(500, seed=1, start_ms=first - 2 * 3_600_000), reg, parts)
    wait_until(caught_up, 180, 0.2, "warm-up to land", procs)
    progress.update(task, advance=1, description=f"(d) full pipeline{label}")
    t0 = time.perf_counter()
    publish_records(kafka, records)
    wait_until(caught_up, 600, 0.05, "pipeline to land", procs)
    r["pipeline_eps"] = len(traffic) / (time.perf_counter() - t0)
    # (e) steady rate: produce time -> row visible
    progress.update(task, advance=1, description=f"(e) steady {steady_rate:,} events/s for {steady_seconds:g} s{label}")
    pids = {"worker": ws[0].pid, "sink": sink.pid, **{f"worker-{i}": w.pid for i, w in enumerate(ws) if i}}
    rss_before = {k: _rss_now_mb(pid) for k, pid in pids.items()}
    steady_from = time.time()
    samples = _RssSampler(pids, every=max(1.0, steady_seconds / 60))
    samples.start()
    _steady(settings, kafka, reg, parts, rate=steady_rate, seconds=steady_seconds)
    samples.stop()
    wait_until(caught_up, 120 + steady_seconds, 0.1, "steady traffic to land", procs)
    r["steady"] = {"rate": steady_rate, "seconds": steady_seconds}
    r["rss_peak_mb"] = {k: _rss_peak_mb(pid) for k, pid in pids.items()}
    r["rss_growth_steady_mb"] = {k: _rss_now_mb(pid) - rss_before[k] for k, pid in pids.items()}
    r["rss_growth_after_warmup_mb"] = samples.growth_after(0.2)
    r["rss_samples_mb"] = samples.series
    stop_role(sink)
    for w in ws:
        stop_role(w)
    r["state_bytes_per_customer"], r["customers_with_state"] = _state_bytes(settings, kafka)
    r["latency_row_ms"], r["latency_alert_ms"] = _latency(settings, steady_from)
    r["late_session_share"] = _late_session_share(settings)
    r["coordinator_share"] = _coordinator_share(kafka) / (len(traffic) + 500 + int(steady_rate * steady_seconds))
    return traffic


class _RssSampler:
    """RSS of the measured processes every `every` seconds, on a thread, during the steady phase."""

    def __init__(self, pids: dict[str, int], every: float):
        import threading
        self._pids = pids
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.series: dict[str, list[float]] = {k: [] for k in pids}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, pid in self._pids.items():
                self.series[k].append(round(_rss_now_mb(pid), 1))
            self._stop.wait(self._every)

    def growth_after(self, warmup: float) -> dict[str, float]:
        """Last sample minus the sample at `warmup` (a fraction) of the phase: growth once warm."""
        return {k: round(xs[-1] - xs[min(len(xs) - 1, int(len(xs) * warmup))], 1) if xs else 0.0
                for k, xs in self.series.items()}


def _steady(settings: Settings, kafka: KafkaConnection, reg: Any, parts: dict[str, int], rate: int,
            seconds: float) -> None:
    from confluent_kafka import Producer
    from cem.kafka.publisher import BatchPublisher, producer_config
    from cem.identity import customer_key
    w = reg.latest("touchpoint")
    pub = BatchPublisher(Producer(producer_config(kafka)), w.parsed, parts,
                         max_events=settings.publisher_max_events, linger_ms=settings.publisher_linger_ms)
    gen = simulated(int(rate * seconds), seed=3, end_ms=int(time.time() * 1000), lazy=True)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    start = time.perf_counter()
    sent = 0
    for ev in gen:
        # live traffic: it happens as it is sent (a customer's simulated week runs in seconds)
        ev["occurred_at"] = ev["received_at"] = int(time.time() * 1000)
        ev["source"] = "bench-steady"
        pub.publish(RAW_TOPICS[ev["channel"]], customer_key(ev["identifiers"]).encode(), ev)
        sent += 1
        if sent % per_tick == 0:
            pub.poll()
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    pub.flush()


def simulated(n: int, seed: int, end_ms: int, lazy: bool = False) -> Any:
    """The first `n` events of a 7-day simulator run ending at `end_ms` (realistic customers:
    ~25 touchpoints a week over every channel, with their identifiers, sessions and moments);
    a list, or with `lazy` an iterator generated while it is consumed (long steady phases)."""
    import itertools
    from cem.sim.simulator import SimConfig, Simulator
    cfg = SimConfig(customers=max(50, n // 20), days=7, seed=seed, start_ms=end_ms - 7 * 86_400_000)
    events = itertools.islice(Simulator(cfg).run(), n)
    return events if lazy else list(events)


def replayed(events: list[dict[str, Any]], last_ms: int) -> list[dict[str, Any]]:
    """`events` moved in time, spacing kept, so that the newest happened at `last_ms`."""
    shift = last_ms - max(ev["occurred_at"] for ev in events)
    for ev in events:
        ev["occurred_at"] += shift
        if isinstance(ev.get("received_at"), int):
            ev["received_at"] += shift
    return events


def _state_bytes(settings: Settings, kafka: KafkaConnection) -> tuple[float, int]:
    """Mean bytes of live per-customer state (latest value per key in the worker's state
    changelog) and the number of customers holding state."""
    from cem.kafka.topic_reader import read_to_end
    latest: dict[bytes, int] = {}
    for m in read_to_end(kafka, state_topic(settings.app_id)):
        if m.key() and not m.key().startswith(b"__"):
            latest[m.key()] = len(m.value() or b"")
    live = [v for v in latest.values() if v]
    return (sum(live) / len(live) if live else 0.0), len(live)


def _latency(settings: Settings, since: float) -> tuple[dict[str, float], dict[str, float]]:
    """Produce → row visible (touchpoints.landed_at) and receipt of the triggering event → its
    negative moment detected and alerted (negative_moments.latency_ms: every moment, also those
    counted as another occurrence of an alert that is already open)."""
    from cem.sinks.clickhouse.client import connect_settings
    c = connect_settings(settings)
    q = c.query("SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', received_at, landed_at)) "
                "FROM touchpoints WHERE source = 'bench-steady'").result_rows[0][0]
    a = c.query("SELECT quantiles(0.5, 0.99)(latency_ms), count() FROM negative_moments "
                "WHERE latency_ms IS NOT NULL AND detected_at >= fromUnixTimestamp64Milli(%(t)s)",
                parameters={"t": int(since * 1000)}).result_rows[0]
    c.close()
    return {"p50": float(q[0]), "p99": float(q[1])}, {"p50": float(a[0][0]), "p99": float(a[0][1]), "n": int(a[1])}


def _late_session_share(settings: Settings) -> float:
    """Share of the stored sessions that are late (an event behind the watermark gets a session
    of its own): near 0 when the bench replays its traffic on time, as it should."""
    from cem.sinks.clickhouse.client import connect_settings
    c = connect_settings(settings)
    late, total = c.query("SELECT countIf(late = 1), count() FROM sessions FINAL").result_rows[0]
    c.close()
    return late / total if total else 0.0


def _coordinator_share(kafka: KafkaConnection) -> int:
    """Events that went through the identity coordinator (cem.identity.links: the events whose
    identifiers no replica could resolve yet), counted off the topic; controls left out."""
    from cem.kafka.topic_reader import read_to_end
    from cem.schemas import ocf
    n = 0
    for m in read_to_end(kafka, IDENTITY_LINKS_TOPIC):
        value = m.value() or b""
        if m.headers():
            continue  # watermark reports, ticks, erasure requests
        n += sum(count for count, _ in ocf.scan(value).blocks) if value[:4] == b"Obj\x01" else 1
    return n


def _machine() -> str:
    import os
    import platform
    return f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def _print(r: dict[str, Any], console: Console) -> None:
    t = Table(title=f"cem bench — {r['events']:,} events per stage, {r['machine']}")
    t.add_column("stage")
    t.add_column("result", justify="right")
    t.add_row("(a) raw ceiling: confluent-kafka consume + fastavro decode", f"{r['raw_eps']:,.0f} events/s")
    t.add_row("(b) naive: Faust, one event per record, Python rows", f"{r['naive_eps']:,.0f} events/s")
    t.add_row("(c) cem landing alone (blocks → FORMAT Avro)", f"{r['landing_eps']:,.0f} events/s")
    t.add_row("(d) cem full pipeline (worker + landing), produce → committed row", f"{r['pipeline_eps']:,.0f} events/s")
    lat = r["latency_row_ms"]
    rate = f"{r['steady']['rate']:,}"
    t.add_row(f"(e) produce → row visible at {rate} events/s (p50 / p99)", f"{lat['p50']:.0f} / {lat['p99']:.0f} ms")
    al = r["latency_alert_ms"]
    t.add_row(f"(e) event received → moment detected and alerted at {rate} events/s (p50 / p99, {al['n']} moments)",
              f"{al['p50']:.0f} / {al['p99']:.0f} ms")
    rss = r["rss_peak_mb"]
    g = r["rss_growth_steady_mb"]
    t.add_row("(f) peak RSS worker / sink", f"{rss['worker']:.0f} / {rss['sink']:.0f} MB")
    t.add_row("(f) RSS growth over the steady phase worker / sink", f"{g['worker']:+.1f} / {g['sink']:+.1f} MB")
    w = r["rss_growth_after_warmup_mb"]
    t.add_row(f"(f) RSS growth after warm-up (last sample minus the one at 20 % of the "
              f"{r['steady']['seconds']:g} s phase) worker / sink", f"{w['worker']:+.1f} / {w['sink']:+.1f} MB")
    t.add_row("(f) state bytes per active customer (state changelog, latest value)",
              f"{r['state_bytes_per_customer']:,.0f} B over {r['customers_with_state']:,} customers")
    so = r.get("scale_out")
    if so:
        n = so["workers"]
        t.add_row(f"(d) cem full pipeline, {n} worker processes", f"{so['pipeline_eps']:,.0f} events/s")
        al = so["latency_alert_ms"]
        t.add_row(f"(e) event received → moment alerted at {so['steady']['rate']:,} events/s, {n} workers "
                  f"(p50 / p99, {al['n']} moments)", f"{al['p50']:.0f} / {al['p99']:.0f} ms")
    t.add_row("(d) share of events the identity coordinator decided / of sessions that are late",
              f"{r['coordinator_share']:.0%} / {r['late_session_share']:.1%}")
    for k, v in r["ratios"].items():
        t.add_row(f"(g) {k}", f"{v:.2f}×")
    console.print(t)
