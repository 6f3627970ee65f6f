"""`cem demo`: the whole path on the embedded defaults, start to finish.

Runs on a private Kafka broker (a free port, its data under <data dir>/demo/kafka), its own app
id (`cem-demo`) and its own data dir (<data dir>/demo, emptied first): nothing of a demo reaches
the broker, consumer groups, state changelogs or ClickHouse of the pipeline you run yourself, and
a demo never touches a broker you already run. Creates the cem topics, starts a worker and the
landing process, runs the simulator (all six channels) into Kafka plus malformed records, waits
until both consumer groups have caught up, stops the roles, prints rows per channel read back
from ClickHouse, the DLQ by reason, moments, lifecycle and the score against ground truth, then
stops the broker and deletes its data (the landed rows stay in <data dir>/demo/clickhouse for
`cem query`, `cem report`, `cem backtest`).
"""
from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cem.connectors.generate import MALFORMED_KINDS, publish_events, publish_raw
from cem.connectors.generate import malformed as make_bad
from cem.connectors.simulate import simulate
from cem.kafka.admin import partitions_of
from cem.kafka.connection import KafkaConnection
from cem.kafka.topic_reader import read_to_end
from cem.ops import infra
from cem.ops.procs import pipeline_lag, start_role, stop_role, wait_until
from cem.ops.report import truth_report
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, RAW_TOPICS, Settings
from cem.sim.generator import touchpoints
from cem.sim.simulator import DAY, SimConfig
from cem.sinks.clickhouse.client import connect_settings
from cem.sinks.queries import render
from cem.sinks.query_server import execute


def publish_generated(settings: Settings, count: int, customers: int, seed: int, malformed: int,
                      single: bool = False) -> tuple[int, int]:

    reg = default_registry()
    now = int(time.time() * 1000)
    kafka = KafkaConnection.from_settings(settings)
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    n = publish_events(kafka,
                       touchpoints(count, customers=customers, seed=seed, start_ms=now - 3_600_000),
                       reg, parts, single=single)
    template = next(touchpoints(1, seed=seed + 1, start_ms=now - 60_000))
    kinds = list(MALFORMED_KINDS)
    bad = [make_bad(kinds[i % len(kinds)], dict(template, event_id=f"bad-{i}"), reg) for i in range(malformed)]
    publish_raw(kafka, RAW_TOPICS["web"], bad)
    return n, len(bad)


def dlq_reasons(kafka: KafkaConnection, timeout: float = 30.0) -> Counter:
    """Dead letters so far, counted by their `cem-reason` header."""
    return Counter(dict(m.headers() or []).get("cem-reason", b"?").decode()
                   for m in read_to_end(kafka, DLQ_TOPIC, timeout=timeout))


DEMO_APP_ID = "cem-demo"


def run_demo(settings: Settings, customers: int, days: int, malformed: int, console: Console) -> int:

    run_dir = settings.data_dir / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    port, broker_dir = infra.free_broker_port(), run_dir / "kafka"
    if infra.kafka("up", port=port, run_dir=broker_dir, quiet=True) != 0:
        console.print("[red]could not start the demo's Kafka broker; see the messages above[/red]")
        return 1
    # everything the demo's clients and roles use points at its own broker, plain (your SASL/TLS
    # settings are for your broker), and its own data
    settings = settings.model_copy(update={
        "data_dir": run_dir, "clickhouse_dsn": "", "kafka_bootstrap": f"127.0.0.1:{port}",
        "kafka_security_protocol": "PLAINTEXT", "app_id": DEMO_APP_ID, "sink_query_port": 0,
        "worker_metrics_port": 0, "sink_metrics_port": 0})
    code = 0
    try:
        infra.create_topics(settings)
        console.print(f"private broker on 127.0.0.1:{port} (removed at the end); data in {run_dir}")
        code = _run(settings, customers, days, malformed, console)
    finally:
        infra.kafka("wipe", port=port, run_dir=broker_dir, quiet=True)
    return code


def _run(settings: Settings, customers: int, days: int, malformed: int, console: Console) -> int:
    """Roles started, customers simulated, everything landed, roles stopped, then the report."""
    run_dir = settings.data_dir
    worker = start_role("worker", settings, run_dir / "worker.log")
    sink = start_role("sink", settings, run_dir / "sink.log")
    code = 0
    try:
        t0 = time.monotonic()
        start_ms = int(time.time() * 1000) - days * DAY  # the simulated period ends now
        sim = simulate(settings, SimConfig(customers=customers, days=days, seed=7, start_ms=start_ms,
                                           out_of_order_rate=0.05), run_dir / "sim")
        _, bad = publish_generated(settings, 0, customers=1, seed=7, malformed=malformed)
        period = f"{days} day{'s' if days != 1 else ''}"
        console.print(f"simulated {customers:,} customers over {period}: {sim.events:,} touchpoints "
                      f"({sim.events / sim.seconds:,.0f} events/s) and {bad} malformed records; "
                      f"ground truth in {run_dir / 'sim'}")
        wait_until(lambda: pipeline_lag(settings) == 0, timeout=300, what="worker and landing to catch up",
                   procs=(worker, sink))
        landed = time.monotonic() - t0
        # quiet now: once the idle timeout passes, event time follows the wall clock and the
        # open sessions and journeys close; wait for those to land too
        time.sleep(settings.idle_timeout_seconds + 2 * settings.tick_seconds + 1)
        wait_until(lambda: pipeline_lag(settings) == 0, timeout=120, what="closing sessions to land",
                   procs=(worker, sink))
        console.print(f"landed in {landed:.1f} s; sessions and journeys closed after the idle timeout")
    except Exception as err:  # noqa: BLE001 - report, then shut down cleanly
        console.print(f"[red]demo failed:[/red] {err} (logs: {run_dir}/worker.log, {run_dir}/sink.log)")
        code = 1
    finally:
        stop_role(sink)
        stop_role(worker)
    if code == 0:
        _report(settings, console, sim.per_channel)
        _outcomes(settings, console, run_dir / "sim")
        _contacts(settings, console)
        _pack(settings, console)
    return code


def _pack(settings: Settings, console: Console) -> None:
    """Two queries of the analysts' pack, and how to run the others on this run's data."""
    for name in ("recovery_impact", "contact_resolution", "recovery_by_action"):
        columns, rows = execute(settings.clickhouse, 0, name, {})
        console.print(f"[bold]cem query {name}[/bold]")
        console.out(render(columns, [tuple(r) for r in rows], "table"), highlight=False)
    console.print("the whole pack: .venv/bin/cem query --list, then .venv/bin/cem query NAME "
                  "(queries this demo's data until you land your own)")


def _contacts(settings: Settings, console: Console) -> None:
    """Repeat-contact moments by the channels the customer used to get in touch."""
    client = connect_settings(settings)
    try:
        rows = client.query(
            "SELECT channels, count(), countIf(status = 'recovered'), countIf(status = 'unrecovered'), "
            "round(avg(contacts), 2) FROM ("
            "  SELECT m.moment_id, any(m.recovery_status) AS status, count() AS contacts,"
            "         arrayStringConcat(arraySort(groupUniqArray(t.channel)), '+') AS channels"
            "  FROM negative_moments AS m FINAL ARRAY JOIN m.evidence AS e"
            "  INNER JOIN touchpoints AS t FINAL ON t.event_id = e"
            "  WHERE m.rule = 'repeat_contact' GROUP BY m.moment_id) "
            "GROUP BY channels ORDER BY count() DESC, channels").result_rows
    finally:
        client.close()
    t = Table(title="repeat-contact moments by channels of contact")
    for col in ("channels", "moments", "recovered", "unrecovered", "contacts per moment"):
        t.add_column(col)
    for channels, n, rec, unrec, per in rows:
        t.add_row(channels, str(n), str(rec), str(unrec), f"{per:g}")
    console.print(t)


def _outcomes(settings: Settings, console: Console, truth_dir: Path) -> None:
    """What the pipeline made of it: moments and alerts per rule, customers per lifecycle stage,
    and the score against the simulator's ground truth."""
    client = connect_settings(settings)
    try:
        moments = client.query(
            "SELECT m.rule, count(), countIf(m.recovery_status = 'recovered'), "
            "countIf(m.recovery_status = 'unrecovered'), "
            "countIf(m.recovery_status NOT IN ('recovered', 'unrecovered')), "
            "any(m.team) FROM negative_moments AS m FINAL "  # the owner; an escalated alert moves on
            "GROUP BY m.rule ORDER BY count() DESC").result_rows
        alerts = dict(client.query("SELECT status, count() FROM alerts FINAL GROUP BY status").result_rows)
        stages = client.query("SELECT stage, count() FROM customers FINAL "
                              "GROUP BY stage ORDER BY count() DESC").result_rows
    finally:
        client.close()
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(alerts.items()))
    m = Table(title=f"negative moments by rule (alerts: {by_status})")
    # open: the recovery window has not ended yet, so recovered + unrecovered + open = moments
    for col in ("rule", "moments", "recovered", "unrecovered", "open", "owner team"):
        m.add_column(col, no_wrap=col == "rule")
    for rule, n, rec, unrec, still_open, team in moments:
        m.add_row(rule, str(n), str(rec), str(unrec), str(still_open), team or "")
    console.print(m)
    life = Table(title="customers by lifecycle stage", caption="(reasons in customer_lifecycle)", min_width=34)
    life.add_column("stage")
    life.add_column("customers")
    for stage, n in stages:
        life.add_row(stage, str(n))
    console.print(life)
    r = truth_report(settings, truth_dir)
    rules = r["rules"].values()
    found = sum(x["truth"] * x["recall"] for x in rules)
    right = sum(x["detected"] * x["precision"] for x in rules)
    console.print(
        f"against ground truth: identity F1 {r['identity_f1']:.4f}, session accuracy {r['session_accuracy']:.4f}, "
        f"moments found {found:.0f}/{r['moments_truth']} with {right:.0f}/{r['moments_detected']} right, "
        f"recovery status accuracy {r['recovery_accuracy']:.4f} (`cem report --truth {truth_dir}` for every figure)",
        soft_wrap=True)


def _report(settings: Settings, console: Console, sent: Counter) -> None:
    client = connect_settings(settings)
    rows = client.query("SELECT channel, count() AS rows, uniqExact(customer_id) AS customers, "
                        "min(occurred_at), max(occurred_at) FROM touchpoints FINAL "
                        "GROUP BY channel ORDER BY channel").result_rows
    client.close()
    t = Table(title="touchpoints in ClickHouse, by channel")
    for col in ("channel", "simulated", "rows", "customer keys", "first event", "last event"):
        t.add_column(col)
    for r in rows:
        mark = "" if sent.get(r[0]) == r[1] else " [red]≠[/red]"
        t.add_row(r[0], str(sent.get(r[0], 0)), f"{r[1]}{mark}", str(r[2]), str(r[3])[:19], str(r[4])[:19])
    t.add_row("[b]total[/b]", f"[b]{sum(sent.values())}[/b]", f"[b]{sum(r[1] for r in rows)}[/b]", "", "", "")
    console.print(t)
    d = Table(title="cem.dlq by reason")
    d.add_column("reason")
    d.add_column("records")
    for reason, n in sorted(dlq_reasons(KafkaConnection.from_settings(settings)).items()):
        d.add_row(reason, str(n))
    console.print(d)
