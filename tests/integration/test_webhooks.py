"""Alert webhooks on the real pipeline: a local HTTP receiver that refuses at first, the worker
and `cem notify` both SIGKILLed and restarted, the alert stream replayed — and still exactly one
accepted (2xx) delivery per alert version, every one correctly signed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Producer

from cem.kafka.connection import KafkaConnection
from cem.connectors.generate import publish_events
from cem.kafka.admin import group_lag, partitions_of
from cem.schemas.registry import default_registry
from cem.settings import ALERTS_TOPIC, DELIVERIES_TOPIC, DLQ_TOPIC, RAW_TOPICS
from cem.webhooks import delivery_id, verify
from cem.ops.procs import settings_env
from tests.support.pipeline import read_topic, rss_mb, start, stop_role, wait_until

pytestmark = pytest.mark.integration
SECRET = "test-webhook-secret"


class Receiver:
    """Counts what it accepted per delivery id. Mode 'down': 503 to everything; 'gone': 410 to
    everything; 'up': 200; 'flaky': 500 to the first attempt of each delivery, then 200. It does
    not deduplicate: a second accepted delivery of one id shows up as a count of 2."""

    def __init__(self) -> None:
        self.mode = "down"
        self.accepted: Counter = Counter()
        self.attempts: Counter = Counter()
        self.bad_signatures = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                did = self.headers["Cem-Delivery-Id"]
                ok = verify(SECRET.encode(), int(self.headers["Cem-Timestamp"]), body,
                            self.headers["Cem-Signature"], now=int(time.time()))
                with outer.lock:
                    outer.attempts[did] += 1
                    if not ok:
                        outer.bad_signatures += 1
                        code = 401
                    elif outer.mode == "gone":
                        code = 410
                    elif outer.mode == "down" or (outer.mode == "flaky" and outer.attempts[did] == 1):
                        code = 503 if outer.mode == "down" else 500
                    else:
                        code = 200
                        outer.accepted[did] += 1
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/cem"


def payment_failures(prefix: str, n: int, at: int) -> list[dict]:
    return [{"event_id": f"{prefix}-{i}", "event_type": "payment_failed", "channel": "web", "occurred_at": at + i,
             "received_at": at + i, "source": "story", "identifiers": {"anonymous_id": f"{prefix}-anon-{i}"},
             "web": {"url": "/checkout", "amount_cents": 1999, "currency": "EUR"}} for i in range(n)]


def endpoint(url: str, **settings: str) -> dict[str, str]:
    """`cem notify` settings: every team's alerts to `url`, signed with SECRET, plus `settings`
    (CEM_WEBHOOK_<NAME> values)."""
    return {"CEM_WEBHOOK_ENDPOINTS": json.dumps({"*": url}), "CEM_WEBHOOK_SECRET": SECRET,
            **{f"CEM_WEBHOOK_{k.upper()}": v for k, v in settings.items()}}


def down_endpoint(backoff: str) -> dict[str, str]:
    """`cem notify` settings for a team whose endpoint refuses connections: 3 attempts, then parked."""
    return endpoint("http://127.0.0.1:9/down", backoff_seconds=backoff, backoff_max_seconds="0.2",
                    max_attempts="3", timeout_seconds="1")


def parked(s) -> list:
    """The deliveries `cem notify` parked in cem.dlq."""
    return [m for m in read_topic(KafkaConnection.from_settings(s), DLQ_TOPIC)
            if dict(m.headers() or []).get("cem-reason") == b"webhook_parked"]


def ledger(s) -> dict[str, dict]:
    """The webhook ledger: delivery id -> its latest outcome record."""
    return {m.key().decode(): json.loads(m.value())
            for m in read_topic(KafkaConnection.from_settings(s), DELIVERIES_TOPIC)}


def webhook_alerts(s) -> set[str]:
    ids = set()
    for m in read_topic(KafkaConnection.from_settings(s), ALERTS_TOPIC):
        for line in m.value().splitlines():
            a = json.loads(line)
            if "webhook" in a["delivery"]:
                ids.add(delivery_id(a))
    return ids


def test_each_alert_is_accepted_exactly_once_through_failures_kills_and_a_replay(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    rx = Receiver()
    env = endpoint(rx.url, backoff_seconds="0.2", backoff_max_seconds="0.5", max_attempts="100")
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    reg = default_registry()
    now = int(time.time() * 1000) - 60_000
    worker = start("worker", s, "worker-1")
    notify = start("notify", s, "notify-1", **env)
    try:
        publish_events(kafka, payment_failures("a", 15, now), reg, parts)
        # the endpoint is down: every alert is attempted, none accepted
        wait_until(lambda: len(rx.attempts) >= 15 and min(rx.attempts.values()) >= 2, 120, 0.2,
                   "first attempts against the failing endpoint", (worker, notify))
        os.killpg(notify.pid, signal.SIGKILL)
        notify.wait()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = start("worker", s, "worker-2")
        notify = start("notify", s, "notify-2", **env)
        rx.mode = "flaky"
        publish_events(kafka, payment_failures("b", 15, now + 1_000), reg, parts)
        wait_until(lambda: len(rx.accepted) >= 30, 180, 0.2, "30 accepted deliveries", (worker, notify))
        # replay the whole alert stream, as a worker restarting from old offsets would
        p = Producer(kafka.client_config())
        for m in read_topic(kafka, ALERTS_TOPIC):
            p.produce(ALERTS_TOPIC, value=m.value(), partition=m.partition())
        assert p.flush(30) == 0
        wait_until(lambda: group_lag(kafka, f"{s.app_id}-notify", [ALERTS_TOPIC]) == 0, 120, 0.2,
                   "the dispatcher to read the replay", (worker, notify))
        time.sleep(3)  # time for a wrong second delivery to happen
    finally:
        stop_role(notify), stop_role(worker)
    expected = webhook_alerts(s)
    assert len(expected) == 30
    assert set(rx.accepted) == expected
    assert all(n == 1 for n in rx.accepted.values()), rx.accepted.most_common(3)
    assert rx.bad_signatures == 0
    assert all(rx.attempts[d] >= 2 for d in expected)  # every one went through a retry
    outcomes = ledger(s)
    assert set(outcomes) == expected and {v["outcome"] for v in outcomes.values()} == {"delivered"}
    assert not parked(s)


def test_an_endpoint_that_refuses_for_good_parks_the_delivery_in_the_dlq(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    env = down_endpoint(backoff="0.1")
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    worker = start("worker", s)
    notify = start("notify", s, "notify", **env)
    try:
        publish_events(kafka, payment_failures("c", 2, int(time.time() * 1000) - 60_000),
                       default_registry(), parts)
        wait_until(lambda: len(parked(s)) == 2, 120, 0.3, "two parked deliveries", (worker, notify))
    finally:
        stop_role(notify), stop_role(worker)
    first = parked(s)[0]
    detail = dict(first.headers())["cem-detail"].decode()
    assert "gave up after 3 attempt(s)" in detail and "CEM_WEBHOOK_ENDPOINTS" in detail
    assert json.loads(first.value())["type"] == "alert.open"


def test_a_receiver_down_for_many_alerts_parks_each_with_bounded_retries_and_flat_memory(cem_settings):
    """Backpressure on the alert side (issue 11): the team's endpoint is down while 400 alerts
    arrive; each gets bounded retries with backoff and is then parked with its reason — none
    dropped — while the notifier's memory stays flat (pending deliveries are bounded, not piled up)."""
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    env = down_endpoint(backoff="0.05")
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    worker = start("worker", s)
    notify = start("notify", s, "notify", **env)
    samples = []
    try:
        now = int(time.time() * 1000) - 60_000
        for wave in range(4):
            publish_events(kafka, payment_failures(f"m{wave}", 100, now + wave), default_registry(), parts)
            want = 100 * (wave + 1)
            wait_until(lambda want=want: len(parked(s)) >= want, 240, 0.5, f"{want} parked deliveries",
                       (worker, notify))
            samples.append(rss_mb(notify.pid))
    finally:
        stop_role(notify), stop_role(worker)
    assert len(parked(s)) == 400  # every alert accounted for: parked with its reason, none silently dropped
    assert max(samples) - samples[0] < 20, samples  # flat after the first wave
    print(f"notify RSS after each 100 parked (MB): {[round(x) for x in samples]}")


def test_parked_deliveries_are_retried_later_and_each_accepted_once_when_the_endpoint_returns(cem_settings):
    """Issue 11: parked is not dropped. While the endpoint is down, each retry round sends one
    probe (re-parked, no second DLQ record); once it answers, the probe's success re-queues the
    rest, and every parked delivery is accepted exactly once."""
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    rx = Receiver()
    env = endpoint(rx.url, backoff_seconds="0.05", backoff_max_seconds="0.1", max_attempts="2",
                   park_retry_seconds="2")
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    worker = start("worker", s)
    notify = start("notify", s, "notify", **env)
    try:
        publish_events(kafka, payment_failures("p", 6, int(time.time() * 1000) - 60_000),
                       default_registry(), parts)
        wait_until(lambda: len(parked(s)) == 6, 120, 0.3, "six parked deliveries", (worker, notify))
        # rounds go on while it is down: some delivery is probed beyond its 2 attempts
        wait_until(lambda: max(rx.attempts.values()) >= 4, 60, 0.3, "a retry round's probes", (worker, notify))
        assert sum(rx.attempts.values()) < 6 * 2 + 20  # one probe per round, not a storm
        rx.mode = "up"
        wait_until(lambda: len(rx.accepted) == 6, 60, 0.3, "the parked deliveries to be accepted", (worker, notify))
        time.sleep(5)  # two more rounds: nothing may be sent again
    finally:
        stop_role(notify), stop_role(worker)
    assert all(n == 1 for n in rx.accepted.values()), rx.accepted
    assert rx.bad_signatures == 0
    assert {v["outcome"] for v in ledger(s).values()} == {"delivered"} and len(ledger(s)) == 6
    assert len(parked(s)) == 6  # parked once each; failed probes did not add DLQ records


def test_retry_parked_after_a_fix_sends_them_when_the_notifier_restarts(cem_settings):
    """The operator's path: a receiver answered 410 (not retryable: parked at once); it is fixed,
    `cem notify --retry-parked` queues the parked deliveries, and the notifier sends all of them
    as soon as it has its partitions, long before its next probe round."""
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    rx = Receiver()
    rx.mode = "gone"
    env = endpoint(rx.url, park_retry_seconds="3600")
    parts = partitions_of(kafka, list(RAW_TOPICS.values()))
    worker = start("worker", s)
    notify = start("notify", s, "notify-1", **env)
    try:
        publish_events(kafka, payment_failures("g", 3, int(time.time() * 1000) - 60_000),
                       default_registry(), parts)
        wait_until(lambda: len(parked(s)) == 3, 120, 0.3, "three parked deliveries", (worker, notify))
        assert sum(rx.attempts.values()) == 3  # 410: parked after one attempt
        stop_role(notify)
        done = subprocess.run([sys.executable, "-m", "cem", "notify", "--retry-parked"], capture_output=True,
                              text=True, env=settings_env(s, **env), timeout=120)
        assert done.returncode == 0 and "requeued 3 parked webhook deliveries" in done.stdout, done.stdout + done.stderr
        assert {v["outcome"] for v in ledger(s).values()} == {"requeued"}
        rx.mode = "up"
        notify = start("notify", s, "notify-2", **env)
        wait_until(lambda: len(rx.accepted) == 3, 90, 0.3, "the requeued deliveries to be accepted", (worker, notify))
        time.sleep(3)
    finally:
        stop_role(notify), stop_role(worker)
    assert all(n == 1 for n in rx.accepted.values()), rx.accepted
    assert {v["outcome"] for v in ledger(s).values()} == {"delivered"}
