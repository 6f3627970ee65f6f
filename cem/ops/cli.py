"""The `cem` command: wires the roles together; no business logic lives here.

Each command imports the role it starts inside its function, unlike the rest of cem.ops: shell
completion and `cem --help` run this module on every Tab or call, and importing every role
(Faust, aiokafka, aiohttp, chdb) up front made them about a second slower here."""
from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cem.ops.cli_privacy import privacy_app
from cem.ops.console import console, err_console
from cem.kafka.connection import KafkaConnection
from cem.settings import Settings

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="cem — Customer Experience Management pipeline.")
infra_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, Maven Central jars).")
schemas_app = typer.Typer(no_args_is_help=True, help="Avro schemas.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
rules_app = typer.Typer(no_args_is_help=True, help="The negative-moment rule catalogue.")
identity_app = typer.Typer(no_args_is_help=True, help="Identity resolution.")
app.add_typer(identity_app, name="identity")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert lifecycle: acknowledge or resolve an alert.")
app.add_typer(alerts_app, name="alerts")
app.add_typer(rules_app, name="rules")
app.add_typer(infra_app, name="infra")
app.add_typer(schemas_app, name="schemas")
app.add_typer(topics_app, name="topics")
from cem.ops.cli_dlq import app as dlq_app  # noqa: E402 - the group lives in its own module
app.add_typer(dlq_app, name="dlq")
app.add_typer(privacy_app, name="privacy")
from cem.ops.cli_playbooks import app as playbooks_app  # noqa: E402 - the group lives in its own module
app.add_typer(playbooks_app, name="playbooks")




def _fail(message: str, code: int = 1) -> typer.Exit:
    """One line on stderr saying what is wrong and what to do; the caller raises the result."""
    err_console.print(f"[red]{message}[/red]", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        print(f"cem {version('cem')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show cem's version and exit."),
          parent: Optional[int] = typer.Option(None, "--stop-with-parent", hidden=True,
                                               help="Stop when process PID is no longer this one's parent "
                                                    "(set by the launchers: cem demo, bench, chaos).")) -> None:
    """cem — Customer Experience Management pipeline."""
    if parent is not None:
        from cem.ops.parent_watch import stop_with_parent
        stop_with_parent(parent)


_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}


def _settings(kafka: bool = False) -> Settings:
    """The process's settings (TLS/SASL and logging configured from them). `kafka`: the command
    needs the broker, so check first that one answers (one line instead of a retry storm)."""
    try:
        settings = Settings()
        KafkaConnection.from_settings(settings)  # an incomplete SASL/TLS setup fails here, not in a role
    except Exception as err:  # pydantic ValidationError or ValueError: say what is wrong and stop
        console.print(f"[red]invalid settings:[/red] {err}")
        raise typer.Exit(2) from None
    from cem.schemas import registry
    registry.configure(settings.schema_registry_file)  # writer schemas registered here
    logging.basicConfig(level=_LEVELS[settings.log_level],
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    if kafka:
        from cem.kafka.admin import broker_answers
        if broker_answers(KafkaConnection.from_settings(settings), timeout=5.0) is not None:
            raise _fail(f"no Kafka broker answers at {settings.kafka_bootstrap}; start one with `cem infra up` "
                        "(or set CEM_KAFKA_BOOTSTRAP)")
    return settings


def _reading_dsn(s: Settings) -> str:
    """The ClickHouse a reading command (query, report, backtest) opens: the configured one; with
    the embedded default and nothing landed there yet, the last `cem demo` run's; with neither,
    stop and say what to do (opening an empty chdb path would create it and fail later)."""
    if s.clickhouse_dsn or (s.data_dir / "clickhouse").exists():
        return s.clickhouse
    demo = s.data_dir / "demo" / "clickhouse"
    if demo.exists():
        print(f"(no data in {s.data_dir / 'clickhouse'}; reading the last demo run in {demo})", file=sys.stderr)
        return f"chdb://{demo.resolve()}"
    raise _fail(f"no ClickHouse data in {s.data_dir / 'clickhouse'} and no demo run in {demo}: run `make demo` "
                "or land your own data with `cem sink` first, or set CEM_CLICKHOUSE_DSN (or CEM_DATA_DIR)")


def _read_errors() -> tuple[type[Exception], ...]:
    """What ClickHouse raises when it cannot be opened or read (missing table, locked path, …)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from cem.sinks.clickhouse.client import ClickHouseUnavailable
    return ClickHouseError, ClickHouseUnavailable


def _read_failed(err: Exception, dsn: str) -> typer.Exit:
    """A reading command's ClickHouse error as one line with what to do."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "UNKNOWN_TABLE" in first:
        return _fail(f"{dsn} has no cem tables yet: nothing has landed there (run `cem sink`, or point "
                     "CEM_CLICKHOUSE_DSN at the ClickHouse the sink writes)")
    return _fail(f"cannot read ClickHouse at {dsn}: {first}")


@infra_app.command("up")
def infra_up() -> None:
    """Fetch the broker jars (once) and start Kafka on 127.0.0.1."""
    from cem.ops import infra
    raise typer.Exit(infra.kafka("up"))


@infra_app.command("down")
def infra_down() -> None:
    """Stop the local broker."""
    from cem.ops import infra
    raise typer.Exit(infra.kafka("down"))


@infra_app.command("status")
def infra_status() -> None:
    """Say whether the local broker runs."""
    from cem.ops import infra
    raise typer.Exit(infra.kafka("status"))


@infra_app.command("wipe")
def infra_wipe() -> None:
    """Stop the local broker and delete its data: every topic, consumer offset and state changelog
    (start your own pipeline from scratch; ClickHouse's data is in CEM_DATA_DIR)."""
    from cem.ops import infra
    raise typer.Exit(infra.kafka("wipe"))


@topics_app.command("create")
def topics_create() -> None:
    """Create every cem topic with CEM_TOPIC_PARTITIONS partitions (idempotent)."""
    from cem.ops import infra
    created = infra.create_topics(_settings(kafka=True))
    console.print(f"created: {', '.join(created) or '(all existed)'}")


@identity_app.command("unmerge")
def identity_unmerge(merge_id: str = typer.Argument(..., help="merge_id from identity_merges")) -> None:
    """Reverse a merge going forward (its identifiers return to the merged-away profile)."""
    from cem.streams.identity_log import find_merge, request_unmerge
    s = _settings(kafka=True)
    kafka = KafkaConnection.from_settings(s)
    merge = find_merge(kafka, merge_id)
    if merge is None or merge.get("status") != "merged":
        console.print(f"[red]no merge {merge_id} with status 'merged' in cem.identity.merges[/red] "
                      "(see: SELECT merge_id, winner, loser, reason FROM identity_merges FINAL "
                      "WHERE status = 'merged')")
        raise typer.Exit(1)
    request_unmerge(kafka, merge)
    console.print(f"unmerge of {merge_id} requested: {merge['moved']} go back to {merge['loser']}; "
                  "the coordinator records it in identity_merges with status 'unmerged'")


def _alert_action(alert_id: str, action: str, by: str, note: Optional[str]) -> None:
    from cem.settings import stage_topic
    from cem.streams.alert_control import find_alert, request_action
    s = _settings(kafka=True)
    kafka = KafkaConnection.from_settings(s)
    alert = find_alert(kafka, alert_id)
    if alert is None:
        console.print(f"[red]no alert {alert_id} in cem.alerts[/red] (see: SELECT alert_id, rule, customer_id, "
                      "status FROM alerts FINAL WHERE status != 'resolved' ORDER BY created_at DESC LIMIT 20)")
        raise typer.Exit(1)
    request_action(kafka, alert, action, by, note, stage_topic(s))
    console.print(f"{action} of alert {alert_id} ({alert['rule']}, customer {alert['customer_id']}, now "
                  f"{alert['status']}) requested; the worker records it in cem.alerts and ClickHouse `alerts`")


@alerts_app.command("ack")
def alerts_ack(alert_id: str = typer.Argument(..., help="alert_id from the alerts table or a webhook"),
               by: str = typer.Option(..., "--by", help="Who acknowledges (recorded as the actor)."),
               note: Optional[str] = typer.Option(None, help="Why, for the record.")) -> None:
    """Acknowledge an open alert: someone is on it (a recurrence only counts an occurrence)."""
    _alert_action(alert_id, "ack", by, note)


@alerts_app.command("resolve")
def alerts_resolve(alert_id: str = typer.Argument(..., help="alert_id from the alerts table or a webhook"),
                   by: str = typer.Option(..., "--by", help="Who resolves (recorded as the actor)."),
                   note: Optional[str] = typer.Option(None, help="What was done, for the record.")) -> None:
    """Resolve an alert; a later moment of the same rule for the customer reopens it."""
    _alert_action(alert_id, "resolve", by, note)


@rules_app.command("list")
def rules_list(file: Optional[Path] = typer.Argument(None,
                                                    help="Rules TOML (default: the shipped catalogue).")) -> None:
    """Show every rule: kind, severity, owner team, recovery window."""
    from cem.rules import load_rules
    t = Table(title=f"rules in {file or 'the default catalogue'}")
    for col in ("rule", "kind", "severity", "team", "recovery (h)"):
        t.add_column(col, no_wrap=col == "rule")
    for r in load_rules(file):
        t.add_row(r.name, r.kind, r.severity, r.team, f"{r.recovery_ms / 3_600_000:g}")
    console.print(t)


@rules_app.command("validate")
def rules_validate(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Validate a rules file; a broken one names the rule and the field."""
    from cem.rules import RuleError, load_routes, load_rules
    try:
        n, k = len(load_rules(file)), len(load_routes(file))
    except RuleError as err:
        console.print(f"[red]invalid:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"[green]ok[/green]: {n} rules, {k} routes")


@schemas_app.command("check")
def schemas_check(directory: Optional[Path] = typer.Option(None,
                                                          help="Schema folder (default: the package's).")) -> None:
    """Fail if a schema is not backward compatible with its last released version."""
    from cem.schemas.compat import check_all, SCHEMA_DIR
    reports = check_all(directory or SCHEMA_DIR)
    bad = 0
    for r in reports:
        if r.compatible:
            console.print(f"[green]ok[/green]   {r.subject} vs {r.released}")
        else:
            bad += 1
            console.print(f"[red]FAIL[/red] {r.subject} vs {r.released}: not backward compatible")
            for p in r.problems:
                console.print(f"       {p}")
    if bad:
        console.print("Give new fields a default, keep field types, or release a new subject.")
        raise typer.Exit(1)


@schemas_app.command("register")
def schemas_register(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The writer schema (.avsc)."),
                     subject: str = typer.Option("touchpoint", help="The subject it writes."),
                     schema_id: Optional[int] = typer.Option(
                         None, "--id", help="The id your producers put in the wire format "
                         "(default: the next free id from 1000).")) -> None:
    """Register a producer's writer schema in CEM_SCHEMA_REGISTRY_FILE; restart the worker, then
    `cem dlq replay --reason unknown_schema_id`."""
    from cem.schemas.registry import RegistrationError, register
    s = _settings()
    if s.schema_registry_file is None:
        console.print("[red]CEM_SCHEMA_REGISTRY_FILE is not set[/red]: point it to a JSON file (created if "
                      "missing) that every cem process reads, e.g. /etc/cem/schemas/registry.json")
        raise typer.Exit(2)
    try:
        entry, added = register(s.schema_registry_file, file, subject, schema_id)
    except (RegistrationError, ValueError) as err:
        console.print(f"[red]not registered:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"{'registered' if added else 'already registered'}: {subject} v{entry.version} as schema id "
                  f"{entry.id} in {s.schema_registry_file}; restart the worker(s) to read it")


@app.command()
def ddl(apply: bool = typer.Option(False, "--apply", help="Apply pending migrations.")) -> None:
    """Print the ClickHouse DDL (forward-only migrations); --apply runs the pending ones."""
    from cem.sinks.clickhouse.migrations import load, apply as do_apply
    if not apply:
        for m in load():
            console.print(f"-- {m.version:03d}_{m.name}", highlight=False)
            for stmt in m.statements:
                print(stmt + ";\n")
        return
    from cem.sinks.clickhouse.client import connect_settings
    s = _settings()
    applied = do_apply(connect_settings(s))
    console.print(f"applied: {', '.join(f'{m.version:03d}_{m.name}' for m in applied) or '(up to date)'}")


@app.command()
def worker(processes: int = typer.Option(1, "--processes", min=1, help="Run this many worker processes in "
                                          "one consumer group (partitions spread over them; supervised).")) -> None:
    """Run the stream worker (Faust app with all agents)."""
    if processes > 1:
        from cem.ops.workers import run_workers
        raise typer.Exit(run_workers(_settings(kafka=True), processes, console.print))
    from cem.streams.run import run_worker
    settings = _settings(kafka=True)
    sys.argv = [sys.argv[0], "worker"]
    run_worker(settings)


@app.command()
def sink(idle_exit: Optional[float] = typer.Option(None, help="Exit after this many idle seconds.")) -> None:
    """Run the landing role: output topics → ClickHouse (the only ClickHouse writer)."""
    from cem.sinks.run import run_sink
    counts = run_sink(_settings(kafka=True), idle_exit=idle_exit)
    console.print(f"landed {counts.rows} rows in {counts.inserts} inserts; {counts.dead} records to DLQ")


@app.command()
def notify(idle_exit: Optional[float] = typer.Option(None, help="Exit after this many idle seconds."),
           retry_parked: bool = typer.Option(False, "--retry-parked", help="Queue every parked delivery again "
                                             "(after fixing the receiver) and exit; the running notifier sends "
                                             "them at its next retry round."),
           team: Optional[str] = typer.Option(None, help="With --retry-parked: only this team's deliveries.")) -> None:
    """Deliver alerts to the owner teams' webhooks (CEM_WEBHOOK_ENDPOINTS), signed, retried, never twice."""
    from cem.sinks.webhooks import requeue_parked, run_notify
    settings = _settings(kafka=True)
    if retry_parked:
        n = requeue_parked(settings, team)
        console.print(f"requeued {n} parked webhook deliver{'y' if n == 1 else 'ies'}; `cem notify` sends them "
                      f"within CEM_WEBHOOK_PARK_RETRY_SECONDS ({settings.webhook_park_retry_seconds:g} s)")
        return
    d = run_notify(settings, idle_exit=idle_exit)
    console.print(f"delivered {d.delivered} webhook(s); parked {d.parked}; expired {d.expired}")


@app.command()
def collector(demo_site: bool = typer.Option(False, "--demo-site", help="Also serve the demo shop at /demo/ "
                                            "(instrumented with analytics.js, sending here).")) -> None:
    """Run the HTTP collector: native /v1/events, Segment's /v1/batch|track|…, Snowplow's /i and tp2."""
    from cem.connectors.collector import run_collector
    s = _settings(kafka=True)
    console.print(f"collector on http://{s.collector_host}:{s.collector_port}"
                  + (f" — demo shop: http://{s.collector_host}:{s.collector_port}/demo/" if demo_site else ""))
    try:
        run_collector(s, demo_site)
    except FileNotFoundError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


@app.command("import")
def import_(channel: str = typer.Argument(..., help="store | web | phone | returns | feedback"),
            file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".csv or .jsonl export"),
            mapping: Optional[Path] = typer.Option(None, help="JSON column mapping overriding the default")) -> None:
    """Import a channel export (CSV/JSONL) into cem.raw.<channel>; bad rows go to cem.dlq."""
    from rich.progress import Progress
    from cem.connectors.importers import import_file
    settings = _settings(kafka=True)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"importing {file.name}", total=None)
            rep = import_file(settings, channel, file, mapping, lambda n: progress.advance(task, n))
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    console.print(f"{file.name}: {rep.rows} rows → {rep.published} touchpoints on cem.raw.{channel}, "
                  f"{rep.dead} to cem.dlq in {rep.seconds:.1f} s")
    for reason, n in sorted(rep.reasons.items()):
        console.print(f"  {n:6d}  {reason}")
    if rep.ignored_columns:
        console.print(f"  ignored columns (no mapping): {', '.join(sorted(rep.ignored_columns))}")


@app.command()
def generate(count: int = typer.Option(5000), customers: int = typer.Option(1000),
             seed: int = typer.Option(7), malformed: int = typer.Option(0),
             single: bool = typer.Option(False, help="One event per record (wire format).")) -> None:
    """Publish generated touchpoints (and malformed records) to the raw topics."""
    from cem.ops.demo import publish_generated
    n, bad = publish_generated(_settings(kafka=True), count, customers, seed, malformed, single)
    console.print(f"published {n} events and {bad} malformed records")


@app.command()
def simulate(customers: int = typer.Option(10_000), days: int = typer.Option(7), seed: int = typer.Option(42),
             out_of_order_rate: float = typer.Option(0.05, help="Share of events delayed within the lateness bound."),
             late_rate: float = typer.Option(0.0, help="Share of events delayed beyond the lateness bound."),
             rate: Optional[float] = typer.Option(None, help="Events/s; default as fast as possible."),
             to: str = typer.Option("kafka", help="kafka or file"),
             start: Optional[str] = typer.Option(None, help="UTC start date YYYY-MM-DD (default: DAYS days ago)."),
             out: Path = typer.Option(Path("var/sim"), help="Folder for events (file mode) and ground truth.")) -> None:
    """Seeded customer population → touchpoints on all channels, with ground truth beside the run."""
    from datetime import datetime, timezone
    from rich.progress import Progress
    from cem.sim.simulator import DAY, SimConfig
    from cem.connectors.simulate import simulate as run_sim
    if start:
        start_ms = int(datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)
    else:
        start_ms = int(time.time() * 1000) - days * DAY  # the simulated period ends now
    cfg = SimConfig(customers=customers, days=days, seed=seed, start_ms=start_ms,
                    out_of_order_rate=out_of_order_rate, late_rate=late_rate)
    settings = _settings(kafka=to == "kafka")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {customers:,} customers × {days} days", total=None)
        res = run_sim(settings, cfg, out, to=to, rate=rate, progress=lambda n: progress.advance(task, n))
    t = Table(title=f"simulated {res.events:,} events in {res.seconds:.1f} s "
                    f"({res.events / max(res.seconds, 1e-9):,.0f} events/s) → {to}")
    t.add_column("channel")
    t.add_column("events", justify="right")
    for ch, n in sorted(res.per_channel.items()):
        t.add_row(ch, f"{n:,}")
    console.print(t)
    m = Table(title=f"negative moments injected ({res.recovered} recovered)")
    m.add_column("rule", no_wrap=True)
    m.add_column("moments", justify="right")
    for rule, n in sorted(res.per_rule.items()):
        m.add_row(rule, str(n))
    console.print(m)
    console.print(f"ground truth in {res.out_dir}/")


@app.command()
def demo(customers: int = typer.Option(2000), days: int = typer.Option(3),
         malformed: int = typer.Option(50)) -> None:
    """Run the whole pipeline on a private broker, print what landed and how it scores, shut down
    (its data: <CEM_DATA_DIR>/demo; nothing reaches your own broker or pipeline)."""
    from cem.ops.demo import run_demo
    raise typer.Exit(run_demo(_settings(), customers, days, malformed, console))


@app.command()
def backtest(rules: Optional[Path] = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                                  help="Rules TOML to try (default: the shipped catalogue)."),
             since: datetime = typer.Option(..., help="Start of the replayed period (UTC), e.g. 2026-11-01."),
             until: datetime = typer.Option(..., help="End of the period (exclusive, UTC)."),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Replay stored touchpoints through the detectors with a rules file; compare with stored moments
    (needs the ClickHouse the sink writes: with embedded chdb, run it while no sink runs)."""
    import json as _json
    from datetime import timezone
    from cem.ops.backtest import run_backtest, totals
    from cem.rules import RuleError, load_rules
    try:
        catalogue = load_rules(rules)
    except RuleError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from err
    since, until = (d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (since, until))
    s = _settings()
    dsn = _reading_dsn(s)
    try:
        rows = run_backtest(s.model_copy(update={"clickhouse_dsn": dsn}), catalogue, since, until)
    except _read_errors() as err:
        raise _read_failed(err, dsn) from None
    if as_json:
        print(_json.dumps([dict(r.__dict__, only_stored=r.only_stored, only_replayed=r.only_replayed)
                           for r in rows], indent=2))
        return
    t = Table(title=f"backtest of {rules or 'the shipped catalogue'} "
                    f"over {since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC")
    for col in ("rule", "kind", "stored", "would fire", "same", "only stored", "only new"):
        t.add_column(col, justify="left" if col in ("rule", "kind") else "right", no_wrap=col == "rule")
    for r in rows:
        t.add_row(r.rule, r.kind, f"{r.stored:,}", f"{r.replayed:,}", f"{r.both:,}", f"{r.only_stored:,}",
                  f"{r.only_replayed:,}")
    tot = totals(rows)
    t.add_row("total", "", f"{tot['stored']:,}", f"{tot['replayed']:,}", f"{tot['both']:,}",
              f"{tot['stored'] - tot['both']:,}", f"{tot['replayed'] - tot['both']:,}")
    console.print(t)


@app.command()
def report(truth: Path = typer.Option(..., exists=True, file_okay=False, help="A simulator run's folder."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Score what landed in ClickHouse against simulator ground truth (run after the sink stopped)."""
    import json as _json
    from cem.ops.report import truth_report
    s = _settings()
    dsn = _reading_dsn(s)
    try:
        r = truth_report(s.model_copy(update={"clickhouse_dsn": dsn}), truth)
    except FileNotFoundError as err:
        raise _fail(f"{truth} is not a simulator run's folder: {err.filename} is missing") from None
    except _read_errors() as err:
        raise _read_failed(err, dsn) from None
    if as_json:
        print(_json.dumps(r, indent=2))
        return
    t = Table(title=f"cem vs ground truth in {truth}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in r.items():
        if k != "rules":
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else f"{v:,}")
    console.print(t)
    m = Table(title="negative moments per rule")
    for col in ("rule", "truth", "detected", "precision", "recall"):
        m.add_column(col, justify="right" if col != "rule" else "left", no_wrap=col == "rule")
    for rule, sc in r["rules"].items():
        m.add_row(rule, str(sc["truth"]), str(sc["detected"]), f"{sc['precision']:.3f}", f"{sc['recall']:.3f}")
    console.print(m)


@app.command()
def query(name: Optional[str] = typer.Argument(None, help="A pack query (see --list)."),
          param: list[str] = typer.Option([], "--param", "-p", help="k=v, repeatable."),
          fmt: str = typer.Option("table", "--format", help="table | csv | json"),
          list_: bool = typer.Option(False, "--list", help="Show the query pack, one line each.")) -> None:
    """Run a query of the analysts' pack against ClickHouse (also while the pipeline runs)."""
    from cem.sinks.queries import QueryError, load_pack, render
    from cem.sinks.query_server import execute
    from cem.sinks.clickhouse.client import ClickHouseTLS, ClickHouseUnavailable
    if list_ or not name:
        for q in load_pack().values():
            args = " ".join(f"[{p.name}={p.default}]" if p.default is not None else f"{p.name}=…" for p in q.params)
            print(f"{q.name:28} {q.summary}" + (f"  ({args})" if args else ""))
        return
    given = {}
    for kv in param:
        if "=" not in kv:
            console.print(f"[red]--param {kv!r} must be k=v[/red]")
            raise typer.Exit(2)
        k, v = kv.split("=", 1)
        given[k.strip()] = v
    s = _settings()
    dsn = _reading_dsn(s)
    try:
        columns, rows = execute(dsn, s.sink_query_port, name, given, ClickHouseTLS.from_settings(s))
        sys.stdout.write(render(columns, [tuple(r) for r in rows], fmt))
    except QueryError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    except (ClickHouseUnavailable, RuntimeError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


@app.command()
def chaos(quick: bool = typer.Option(False, "--quick", help="The short schedule (about 4 minutes)."),
          seed: int = typer.Option(11, help="Seeds the simulator and the fault times."),
          as_json: bool = typer.Option(False, "--json"),
          deadline: float | None = typer.Option(None, min=60, help="Give up after this many seconds, naming what "
                                         "did not happen (default: 480 with --quick, 1800 without).")) -> None:
    """Run the pipeline under injected faults and reconcile against ground truth."""
    import json as _json
    from cem.ops.chaos import GaveUp, print_result, run_chaos
    try:
        result = run_chaos(_settings(), quick, seed, console, deadline)
    except GaveUp as err:
        from rich.markup import escape
        raise _fail(f"cem chaos: {escape(str(err))}", 2) from err
    if as_json:
        print(_json.dumps(result, indent=2))
    else:
        print_result(result, console)
    bad = (result["events_lost"] or result["rows_duplicated"] or result["alerts_delivered_more_than_once"]
           or result["processes_crashed"])
    raise typer.Exit(1 if bad else 0)


@app.command()
def bench(events: int = typer.Option(200_000, help="Events per stage."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON for comparing commits."),
          steady_seconds: float = typer.Option(10.0, help="Length of the steady phase (e); 600 for the "
                                               "10-minute memory soak."),
          steady_rate: int = typer.Option(5_000, help="Events/s sent during the steady phase."),
          workers: int = typer.Option(2, min=1, help="Also run (d) and (e) with this many worker processes in one "
                                      "group (steady phase at workers × the rate) and report the ratio to one; "
                                      "1 skips it.")) -> None:
    """Measure raw ceiling, naive baseline, landing and pipeline throughput in one run."""
    from cem.ops.bench import run_bench
    raise typer.Exit(run_bench(_settings(), events, as_json, console, steady_seconds=steady_seconds,
                               steady_rate=steady_rate, workers=workers))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
