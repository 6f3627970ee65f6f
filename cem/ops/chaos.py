"""`cem chaos`: the simulator at a steady rate through the whole pipeline on the local broker while
a seeded schedule injects faults; then a reconciliation against the simulator's ground truth.

Faults (each a `Fault` in `schedule()`): SIGKILL of a worker, SIGKILL of the landing process, the
broker stopped then restarted, ClickHouse unavailable (embedded: the sink's inserts fail through
`CEM_FAULT_INJECTION_DIR`), the collector restarted in the middle of a burst of HTTP events (the
burst client retries what was not answered, as trackers do), a rebalance (a second worker joins,
then leaves). Alerts go to a local webhook receiver that counts every delivery.

Reconciliation (printed as a table, returned as a dict): events sent / landed / lost / duplicated
rows; moments expected / raised / missed / duplicated; alert deliveries received more than once;
peak RSS per process; seconds from the end of each fault until the component it hit made
progress again. Orchestration only: the pipeline runs as the real roles in child processes.

Deadlines: every wait ends at its own limit (a fault's recovery, the catch-up after the traffic)
or at the run's deadline (`--deadline`), whichever comes first. When one expires the run stops
every role and raises `GaveUp`, naming what it waited on, for how long, how far behind each
consumer group was on which topic and which roles were running (with their logs); `cem chaos`
prints that and exits 2. A role that never recovers is a finding, never a hang.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from cem.connectors.simulate import simulate
from cem.kafka.admin import committed_total, lag_by_topic
from cem.kafka.connection import KafkaConnection
from cem.ops import infra
from cem.ops.procs import start_role
from cem.settings import ERASURES_TOPIC, IDENTITY_LINKS_TOPIC, RAW_TOPICS, Settings, stage_topic
from cem.sim.simulator import DAY, SimConfig
from cem.sim.truth import moment_scores
from cem.sinks.clickhouse.client import connect_settings
from cem.sinks.run import TABLES


@dataclass
class Fault:
    name: str        # worker_kill | sink_kill | broker_down | clickhouse_down | collector_restart | rebalance
    at: float        # seconds after the traffic started
    duration: float = 0.0
    recovered_in: float | None = None


def schedule(quick: bool, seed: int) -> list[Fault]:
    """The fault plan; `seed` jitters the times so runs differ but repeat."""
    r = random.Random(seed)
    if quick:
        plan = [Fault("worker_kill", 15), Fault("clickhouse_down", 40, 15), Fault("sink_kill", 75),
                Fault("broker_down", 100, 10), Fault("collector_restart", 130)]
    else:
        plan = [Fault("worker_kill", 30), Fault("sink_kill", 75), Fault("broker_down", 110, 20),
                Fault("clickhouse_down", 175, 30), Fault("worker_kill", 240), Fault("collector_restart", 300),
                Fault("rebalance", 340, 40), Fault("worker_kill", 420)]
    for f in plan:
        f.at += r.uniform(0, 3)
    return plan


class Receiver:
    """A webhook endpoint that counts deliveries by Cem-Delivery-Id (alert id and revision)."""

    def __init__(self) -> None:
        self.deliveries: Counter = Counter()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                me.deliveries[self.headers.get("Cem-Delivery-Id", "?")] += 1
                self.send_response(200)
                self.end_headers()

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/hook"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()


def peak_rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Roles:
    """The pipeline's processes, restartable, with each role's peak RSS remembered."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.s, self.dir = settings, log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.peak: dict[str, float] = {}  # role -> peak RSS in MB
        self.runs: Counter[str] = Counter()
        self.crashed: list[str] = []  # roles that exited on their own (restarted, as a supervisor would)

    def start(self, role: str, name: str | None = None, *args: str) -> None:
        name = name or role
        self.runs[name] += 1
        self.procs[name] = start_role(role, self.s, self.dir / f"{name}-{self.runs[name]}.log", *args)

    def note(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            self.peak[name.split("-")[0]] = max(self.peak.get(name.split("-")[0], 0.0), peak_rss_mb(p.pid))

    def kill(self, name: str) -> None:
        self.note(name)
        p = self.procs.pop(name)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def log(self, name: str) -> Path:
        return self.dir / f"{name}-{self.runs[name]}.log"

    def stop(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL of its process group after `timeout` seconds."""
        self.note(name)
        self._end({name: self.procs.pop(name)}, timeout)

    def _end(self, procs: dict[str, subprocess.Popen], timeout: float) -> None:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        until = time.monotonic() + timeout
        for p in procs.values():
            try:
                p.wait(max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def describe(self) -> str:
        """Each role: running or exited, and its log."""
        return "Roles: " + "; ".join(
            f"{name} {'running' if p.poll() is None else f'exited {p.returncode}'} (log {self.log(name)})"
            for name, p in sorted(self.procs.items())) + "."

    def supervise(self) -> None:
        """Restart any role that exited on its own, and remember it (a crash is a finding)."""
        for name, p in list(self.procs.items()):
            if p.poll() is not None:
                self.crashed.append(f"{name} (exit {p.returncode}, log {self.log(name)})")
                del self.procs[name]
                self.start(name.split("-")[0] if name != "worker-b" else "worker", name)

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every role at once: the whole stop takes at most `timeout` seconds."""
        for name in self.procs:
            self.note(name)
        procs, self.procs = self.procs, {}
        self._end(procs, timeout)


class GaveUp(RuntimeError):
    """A wait of the run did not end in time; the message says what it waited on and what the
    pipeline looked like then."""


class Deadline:
    """The run's time budget: a wait ends at its own limit or here, whichever comes first."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()


def wait_for(what: str, done: Callable[[], bool], limit: float, deadline: Deadline,
             explain: Callable[[], str], interval: float = 0.5) -> float:
    """Poll `done` until true; return the seconds it took. After `limit` seconds, or when the
    run's deadline passes first, raise GaveUp naming `what`, followed by `explain()`. (A poll
    in progress is not interrupted: each one asks the broker with short timeouts.)"""
    started = time.monotonic()
    which = (f"its limit of {limit:.0f} s" if limit <= deadline.left()
             else f"the run's deadline of {deadline.seconds:.0f} s (--deadline)")
    end = started + max(0.0, min(limit, deadline.left()))
    while True:
        if done():
            return round(time.monotonic() - started, 1)
        now = time.monotonic()
        if now >= end:
            raise GaveUp(f"gave up after {now - started:.0f} s waiting for {what} ({which}). {explain()}")
        time.sleep(min(interval, end - now))


def committed(settings: Settings, group: str, topics: list[str]) -> int:
    """The group's committed-offset total, or -1 while the broker cannot say (no progress known)."""
    try:
        return committed_total(KafkaConnection.from_settings(settings), group, topics, timeout=5.0)
    except Exception:  # noqa: BLE001 - broker unreachable
        return -1


def progressed(probe: Callable[[], int]) -> Callable[[], bool]:
    """True once `probe()` exceeds its first answer (the component committed new work); a first
    answer of -1 (broker away) is replaced by the first real one."""
    base = probe()

    def check() -> bool:
        nonlocal base
        now = probe()
        if base < 0 and now >= 0:
            base = now
        return now > base >= 0
    return check


def consumer_groups(s: Settings) -> dict[str, tuple[str, list[str]]]:
    """Role -> (its consumer group, the topics it consumes): what `lags` measures, as
    `cem.ops.procs.pipeline_lag` counts it."""
    return {"worker": (s.app_id, [*RAW_TOPICS.values(), IDENTITY_LINKS_TOPIC, stage_topic(s)]),
            "sink": (f"{s.app_id}-landing", [*TABLES, ERASURES_TOPIC])}


def lags(s: Settings) -> dict[str, dict[str, int]]:
    """Role -> topic -> records its group has not committed yet. Every request waits at most
    5 s and is asked once, so a poll never holds a wait past its deadline for long; raises
    when the broker cannot answer."""
    kafka = KafkaConnection.from_settings(s)
    return {role: lag_by_topic(kafka, group, topics, timeout=5.0, attempts=1)
            for role, (group, topics) in consumer_groups(s).items()}


def caught_up(s: Settings) -> bool:
    """Nothing produced is left uncommitted by the worker and landing groups (False while the
    broker cannot say)."""
    try:
        return not any(n for per_topic in lags(s).values() for n in per_topic.values())
    except Exception:  # noqa: BLE001 - broker still coming back
        return False


def describe_lag(s: Settings) -> str:
    """How far behind each role's group is, by topic: the first thing to look at when a wait
    expired."""
    try:
        found = lags(s)
    except Exception as err:  # noqa: BLE001 - the answer is that the broker did not answer
        return f"The broker at {s.kafka_bootstrap} did not answer a lag query: {err}."
    said = []
    for role, per_topic in found.items():
        behind = ", ".join(f"{n:,} on {t}" for t, n in per_topic.items() if n)
        said.append(f"{role} ({consumer_groups(s)[role][0]}): " + (f"behind by {behind}" if behind else "caught up"))
    return "Uncommitted records: " + "; ".join(said) + "."


# Limits of the single waits (each also ends at the run's deadline). A fault's recovery takes
# ~20 s at most here (a killed worker's group session timeout); the catch-up after the traffic
# is what the faults left to process, at far below the pipeline's throughput.
RECOVERY_LIMIT = 120.0
COLLECTOR_LIMIT = 60.0
CATCH_UP_LIMIT = 240.0
# Whole runs: the quick one takes ~4 min on a loaded 2-core machine (docs/performance.md).
DEADLINE = {True: 480.0, False: 1800.0}


def run_chaos(settings: Settings, quick: bool, seed: int, console: Any,
              deadline_seconds: float | None = None) -> dict[str, Any]:
    """Raises GaveUp when a wait expires (every role stopped first); see the module docstring."""
    deadline = Deadline(deadline_seconds or DEADLINE[quick])
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    started_broker = infra.kafka("status", port) != 0
    if started_broker and infra.kafka("up", port) != 0:
        raise RuntimeError("could not start the local Kafka broker")
    receiver = Receiver()
    faults_dir = settings.data_dir / "chaos-faults"
    s = infra.fresh_run(settings, "chaos", webhook_endpoints={"*": receiver.url}, fault_injection_dir=faults_dir,
                        webhook_backoff_seconds=0.5, webhook_backoff_max_seconds=5.0,
                        tick_seconds=1.0,
                        # old data replayed fast (a week in minutes: 10 min of event time is ~10 s
                        # here): a source stalled by an outage must hold event time back rather than
                        # be taken for idle, so idleness waits longer than the longest outage
                        idle_timeout_seconds=40.0, all_quiet_seconds=45.0)
    faults_dir.mkdir(parents=True, exist_ok=True)
    roles = Roles(s, s.data_dir)
    for role in ("worker", "sink", "notify", "collector"):
        roles.start(role)
    cfg = SimConfig(customers=600 if quick else 8_000, days=7, seed=seed,
                    start_ms=int(time.time() * 1000) - 7 * DAY, out_of_order_rate=0.05)
    plan = schedule(quick, seed)
    span = max(f.at + f.duration for f in plan) + 10
    estimate = cfg.customers * 25  # ~25 touchpoints per customer-week (README "Performance")
    rate = max(50.0, estimate / span)
    sim_out = s.data_dir / "sim"
    sim = Traffic(s, cfg, sim_out, rate)
    burst = Burst(s)
    t0 = time.monotonic()
    console.print(f"chaos: {'quick' if quick else 'full'} schedule, ~{estimate:,} events at {rate:,.0f}/s, "
                  f"{len(plan)} faults, deadline {deadline.seconds:.0f} s; logs in {s.data_dir}")
    sim.start()
    raw = list(RAW_TOPICS.values())
    workers = lambda: committed(s, s.app_id, raw)  # noqa: E731
    landing = lambda: committed(s, f"{s.app_id}-landing", list(TABLES))  # noqa: E731

    def explain() -> str:
        return f"{describe_lag(s)} {roles.describe()}"

    def idle() -> bool:
        roles.supervise()  # a role that died meanwhile is restarted (and reported)
        return not sim.is_alive() and caught_up(s)

    def recovered(f: Fault, who: str, probe: Callable[[], int]) -> float:
        """Seconds until `who` commits new work after fault `f` (or everything is processed)."""
        moved = progressed(probe)
        return wait_for(f"{who} to make progress after {f.name}", lambda: idle() or moved(),
                        RECOVERY_LIMIT, deadline, explain)

    def note(what: str) -> None:
        console.print(f"  t+{time.monotonic() - t0:5.0f}s  {what}")
    try:
        for f in plan:
            time.sleep(max(0.0, min(f.at - (time.monotonic() - t0), deadline.left())))
            note(f.name + (f" for {f.duration:.0f}s" if f.duration else ""))
            if f.name == "worker_kill":
                roles.kill("worker")
                roles.start("worker")
                f.recovered_in = recovered(f, "the worker group", workers)
            elif f.name == "sink_kill":
                roles.kill("sink")
                roles.start("sink")
                f.recovered_in = recovered(f, "the landing group (sink)", landing)
            elif f.name == "broker_down":
                infra.kafka("down", port)
                time.sleep(f.duration)
                if infra.kafka("up", port) != 0:
                    raise GaveUp(f"the broker did not start again after {f.name} (see scripts/kafka.sh's "
                                 f"message above). {roles.describe()}")
                f.recovered_in = recovered(f, "the worker and landing groups", lambda: min(workers(), landing()))
            elif f.name == "clickhouse_down":
                (faults_dir / "clickhouse_down").touch()
                time.sleep(f.duration)
                (faults_dir / "clickhouse_down").unlink()
                f.recovered_in = recovered(f, "the landing group (sink)", landing)
            elif f.name == "collector_restart":
                burst.start()
                time.sleep(2)
                roles.stop("collector")
                roles.start("collector")
                f.recovered_in = wait_for(
                    f"the collector to answer /healthz after {f.name}",
                    lambda: _http_ok(f"http://127.0.0.1:{s.collector_port}/healthz"), COLLECTOR_LIMIT,
                    deadline, roles.describe, 0.2)
            elif f.name == "rebalance":
                roles.start("worker", "worker-b")
                time.sleep(f.duration)
                roles.stop("worker-b")
                f.recovered_in = recovered(f, "the worker group", workers)
            note(f"{f.name} recovered in {f.recovered_in} s")
            roles.supervise()
            for name in list(roles.procs):
                roles.note(name)
        wait_for("the simulator to send its last events", lambda: not sim.is_alive(), CATCH_UP_LIMIT,
                 deadline, explain)
        sim.check()
        burst.stop()
        note("traffic sent; waiting for the pipeline to catch up")
        took = wait_for("the pipeline to catch up after the traffic", idle, CATCH_UP_LIMIT, deadline, explain, 1.0)
        note(f"caught up in {took} s; quiet for event time to pass the last sessions")
        quiet = s.all_quiet_seconds or s.idle_timeout_seconds
        time.sleep(min(quiet + 3 * s.tick_seconds, max(0.0, deadline.left())))  # event time follows the wall clock
        took = wait_for("the closed sessions to land", idle, CATCH_UP_LIMIT, deadline, explain, 1.0)
        note(f"sessions landed in {took} s")
        time.sleep(min(10.0, max(0.0, deadline.left())))  # the notifier's last deliveries
    finally:
        burst.stop()
        roles.stop_all()
        receiver.close()
        if started_broker:
            infra.kafka("down", port)
    result = reconcile(s, sim_out, burst.accepted, receiver.deliveries)
    result["faults"] = [(f.name, round(f.at), f.recovered_in) for f in plan]
    result["peak_rss_mb"] = {k: round(v) for k, v in sorted(roles.peak.items())}
    result["processes_crashed"] = roles.crashed
    result["seconds"] = round(time.monotonic() - t0)
    return result


class Traffic:
    """The simulator in a thread at `rate` events/s; `check()` re-raises what stopped it early
    (a reconciliation without its ground truth would only say the truth file is missing)."""

    def __init__(self, s: Settings, cfg: SimConfig, out: Path, rate: float):
        self.error: BaseException | None = None

        def run() -> None:
            try:
                simulate(s, cfg, out, rate=rate)
            except BaseException as err:  # noqa: BLE001 - reported by check()
                self.error = err
        self._thread = threading.Thread(target=run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def check(self) -> None:
        if self.error is not None:
            raise GaveUp(f"the simulator stopped sending: {self.error}") from self.error


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Burst:
    """HTTP events to the collector, retried until answered (as a tracker retries), while the
    collector restarts. `accepted` holds every event id the collector acknowledged."""
    settings: Settings
    accepted: set = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        key = next(iter(self.settings.collector_api_keys.values())).get_secret_value()
        n = 0
        while not self._stop.is_set() and n < 3000:
            now = int(time.time() * 1000)
            batch = [{"event_id": f"burst-{n + i}", "event_type": "page_view", "occurred_at": now,
                      "identifiers": {"anonymous_id": f"burst-visitor-{(n + i) % 40}"},
                      "attributes": {"url": "/chaos"}} for i in range(50)]
            body = json.dumps({"batch": batch}).encode()
            for _ in range(60):  # retry what was not answered: the collector may be restarting
                if self._stop.is_set():
                    return
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{self.settings.collector_port}/v1/events",
                                                 data=body, method="POST",
                                                 headers={"Content-Type": "application/json", "X-API-Key": key})
                    with urllib.request.urlopen(req, timeout=10) as r:
                        if r.status == 202:
                            self.accepted |= {e["event_id"] for e in batch}
                            break
                except OSError:
                    pass
                time.sleep(0.25)
            n += 50
            time.sleep(0.1)


def reconcile(s: Settings, sim_out: Path, burst: set[str], deliveries: Counter) -> dict[str, Any]:
    truth_events = {json.loads(line)["event_id"] for line in open(sim_out / "truth_events.jsonl")}
    truth_moments = [json.loads(line) for line in open(sim_out / "truth_moments.jsonl")]
    sent = truth_events | burst
    client = connect_settings(s)
    try:
        rows = client.query("SELECT event_id, count() FROM touchpoints GROUP BY event_id").result_rows
        detected = client.query("SELECT rule, evidence, recovery_status FROM negative_moments FINAL").result_rows
    finally:
        client.close()
    landed = {e: n for e, n in rows}
    scores, _, _ = moment_scores(truth_moments, detected)
    by_evidence = Counter((r, tuple(sorted(ev))) for r, ev, _ in detected)
    return {
        "events_sent": len(sent), "events_landed": len(sent & set(landed)),
        "events_lost": len(sent - set(landed)),
        "rows_duplicated": sum(n - 1 for n in landed.values() if n > 1),
        "moments_expected": len(truth_moments), "moments_raised": len(detected),
        "moments_missed": sum(sc.truth - sc.matched_truth for sc in scores.values()),
        "moments_not_in_truth": sum(sc.detected - sc.matched_detected for sc in scores.values()),
        "moments_duplicated": sum(n - 1 for n in by_evidence.values() if n > 1),
        "alert_deliveries": sum(deliveries.values()),
        "alerts_delivered_more_than_once": sum(1 for n in deliveries.values() if n > 1),
    }


def print_result(result: dict[str, Any], console: Any) -> None:
    t = Table(title="cem chaos: reconciliation against ground truth")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in result.items():
        if k not in ("faults", "peak_rss_mb", "processes_crashed"):
            t.add_row(k, f"{v:,}")
    console.print(t)
    f = Table(title="faults")
    for col in ("fault", "at (s)", "recovered in (s)"):
        f.add_column(col, justify="right" if col != "fault" else "left")
    for name, at, rec in result["faults"]:
        f.add_row(name, str(at), f"{rec}")
    console.print(f)
    console.print("peak RSS (MB): " + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mb"].items()))
    console.print("processes that exited on their own: " + (", ".join(result["processes_crashed"]) or "none"))
