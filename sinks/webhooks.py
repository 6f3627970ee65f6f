"""`cem notify`: cem.alerts → the owner team's HTTP webhook (signing, retries and the delivery
ledger as `cem.webhooks` describes them).

Loop contract:
- Reads cem.alerts (JSONEachRow batch records) in its own consumer group; an alert version
  routed with delivery 'webhook' whose team has an endpoint becomes a job, unless the ledger
  already holds its delivery id (a replay of the pipeline re-emits the same id).
- Jobs are attempted when due, one HTTP request at a time (alerts are rare next to events);
  failures wait out their backoff in a heap, so one broken endpoint never holds up the others.
- A final outcome (delivered or parked) is written to the compacted ledger topic and flushed
  before the job counts as done; a parked delivery also goes to cem.dlq (reason
  `webhook_parked`) with what the endpoint answered.
- Offsets are committed only up to the last record whose jobs are all done, so a restarted
  dispatcher picks up every undelivered alert again — and skips the delivered ones by the ledger.
"""
from __future__ import annotations

import heapq
import json
import logging
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from cem.webhooks import Ledger, RetryPolicy, delivery_id, payload, sign, wants_webhook
from .dlq import DeadLetters
from cem.connectors.security import client_config

log = logging.getLogger(__name__)
#: post(url, body, headers, timeout) -> (HTTP status or None when there was no answer, detail, retry-after s)
Post = Callable[[str, bytes, dict[str, str], float], tuple[int | None, str, float | None]]


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str, float | None]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured endpoints only
            return resp.status, "", None
    except urllib.error.HTTPError as err:
        retry_after = err.headers.get("Retry-After") if err.headers else None
        try:
            after = float(retry_after) if retry_after else None
        except ValueError:
            after = None
        return err.code, f"HTTP {err.code} {err.reason}", after
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        return None, f"no answer: {getattr(err, 'reason', err)}", None


@dataclass(order=True)
class _Job:
    due: float
    did: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    records: list[tuple[int, int]] = field(compare=False, default_factory=list)
    attempts: int = field(compare=False, default=0)


class Dispatcher:
    def __init__(self, consumer: Consumer, producer: Producer, topic: str, ledger_topic: str,
                 endpoints: dict[str, str], secret: bytes, policy: RetryPolicy, dead: DeadLetters,
                 timeout: float = 5.0, post: Post = http_post, on_outcome: Callable[[str], None] | None = None):
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._ledger_topic = ledger_topic
        self._endpoints = endpoints
        self._secret = secret
        self._policy = policy
        self._dead = dead
        self._timeout = timeout
        self._post = post
        self._on_outcome = on_outcome
        self._rng = random.Random()
        self.ledger = Ledger()
        self._heap: list[_Job] = []
        self._inflight: dict[str, _Job] = {}
        self._remaining: dict[tuple[int, int], int] = {}   # (partition, offset) -> jobs not done
        self._seen: dict[int, list[int]] = {}              # partition -> offsets in order
        self.delivered = 0
        self.parked = 0

    def restore(self, records: Any) -> None:
        """Replay the ledger (an iterable of confluent Messages) before the first poll."""
        for m in records:
            if m.value() is not None:
                self.ledger.record(m.key().decode(), json.loads(m.value())["outcome"])

    # -- input ---------------------------------------------------------------------------------------
    def _take(self, msg: Any) -> None:
        p, off = msg.partition(), msg.offset()
        self._seen.setdefault(p, []).append(off)
        jobs = 0
        for line in (msg.value() or b"").splitlines():
            try:
                alert = json.loads(line)
                did = delivery_id(alert)
            except (ValueError, KeyError, TypeError):
                continue  # landing dead-letters malformed rows; nothing to deliver here
            url = wants_webhook(alert, self._endpoints)
            if url is None or self.ledger.done(did):
                continue
            job = self._inflight.get(did)
            if job is None:
                job = self._inflight[did] = _Job(time.monotonic(), did, url, payload(alert))
                heapq.heappush(self._heap, job)
            job.records.append((p, off))
            jobs += 1
        self._remaining[(p, off)] = jobs

    # -- attempts -------------------------------------------------------------------------------------
    def _attempt(self, job: _Job) -> None:
        job.attempts += 1
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "cem-webhooks/1",
                   "Cem-Delivery-Id": job.did, "Cem-Timestamp": str(ts), "Cem-Attempt": str(job.attempts),
                   "Cem-Signature": sign(self._secret, ts, job.body)}
        status, detail, retry_after = self._post(job.url, job.body, headers, self._timeout)
        verdict = self._policy.verdict(job.attempts, status)
        if verdict == "retry":
            job.due = time.monotonic() + self._policy.delay(job.attempts, self._rng, retry_after)
            heapq.heappush(self._heap, job)
            log.info("webhook %s attempt %d failed (%s); retrying", job.did, job.attempts, detail)
            if self._on_outcome:
                self._on_outcome("retried")
            return
        self._finish(job, verdict, status, detail)

    def _finish(self, job: _Job, outcome: str, status: int | None, detail: str) -> None:
        record = {"outcome": outcome, "attempts": job.attempts, "status": status, "url": job.url,
                  "detail": detail, "at": int(time.time() * 1000)}
        self._producer.produce(self._ledger_topic, key=job.did.encode(), value=json.dumps(record).encode())
        if outcome == "parked":
            self._dead.send(job.body, "webhook_parked",
                            f"alert delivery {job.did} to {job.url} gave up after {job.attempts} attempt(s): "
                            f"{detail or status}. Fix the endpoint or its CEM_WEBHOOK_ENDPOINTS entry; "
                            f"the body is this record's value", topic=self._topic,
                            partition=job.records[0][0], offset=job.records[0][1])
            self.parked += 1
            log.warning("webhook %s parked after %d attempt(s): %s", job.did, job.attempts, detail or status)
        else:
            self.delivered += 1
        if self._producer.flush(30):
            raise RuntimeError("the webhook ledger was not acknowledged by Kafka; is the broker up?")
        self.ledger.record(job.did, outcome)
        del self._inflight[job.did]
        for rec in job.records:
            self._remaining[rec] -= 1
        if self._on_outcome:
            self._on_outcome(outcome)

    # -- offsets ------------------------------------------------------------------------------------
    def _commit(self) -> None:
        offsets = []
        for p, seen in self._seen.items():
            done = 0
            while done < len(seen) and self._remaining.get((p, seen[done]), 0) == 0:
                self._remaining.pop((p, seen[done]), None)
                done += 1
            if done:
                offsets.append(TopicPartition(self._topic, p, seen[done - 1] + 1))
                del seen[:done]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def _revoked(self, consumer: Any, partitions: list) -> None:
        """Another dispatcher takes these partitions: it redelivers what is not done (the ledger
        skips what is), so their jobs and offsets are dropped here, after a last commit."""
        self._commit()
        gone = {tp.partition for tp in partitions}
        for p in gone:
            for off in self._seen.pop(p, []):
                self._remaining.pop((p, off), None)
        for did, job in list(self._inflight.items()):
            job.records = [r for r in job.records if r[0] not in gone]
            if not job.records:
                del self._inflight[did]
        self._heap = [j for j in self._heap if j.did in self._inflight]
        heapq.heapify(self._heap)

    def run(self, should_stop: Callable[[], bool], idle_exit: float | None = None) -> None:
        self._consumer.subscribe([self._topic], on_revoke=self._revoked)
        idle_since = time.monotonic()
        while not should_stop():
            now = time.monotonic()
            wait = min(0.5, max(0.0, self._heap[0].due - now)) if self._heap else 0.5
            msgs = self._consumer.consume(500, wait)
            for m in msgs:
                if m.error() is None:
                    self._take(m)
            while self._heap and self._heap[0].due <= time.monotonic() and not should_stop():
                self._attempt(heapq.heappop(self._heap))
            self._commit()
            if msgs or self._heap:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break


def run_notify(settings: Any, idle_exit: float | None = None) -> Dispatcher:
    """Entry point of `cem notify`: restore the ledger, then deliver until SIGTERM/SIGINT."""
    from cem import metrics
    from cem.procs import stop_requested
    from cem.connectors.publisher import producer_config
    from cem.connectors.topic_reader import read_to_end
    from cem.settings import ALERTS_TOPIC, DELIVERIES_TOPIC, DLQ_TOPIC

    should_stop = stop_requested()
    metrics.serve(settings.notify_metrics_port, settings.metrics_host)
    if not settings.webhook_endpoints:
        log.warning("no CEM_WEBHOOK_ENDPOINTS configured: alerts are read but none is delivered")
    producer = Producer(producer_config(settings.kafka_bootstrap))
    consumer = Consumer(client_config(settings.kafka_bootstrap, **{"group.id": f"{settings.app_id}-notify",
                                                                   "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    policy = RetryPolicy(settings.webhook_max_attempts, settings.webhook_backoff_seconds,
                         settings.webhook_backoff_max_seconds)
    d = Dispatcher(consumer, producer, ALERTS_TOPIC, DELIVERIES_TOPIC, dict(settings.webhook_endpoints),
                   settings.webhook_secret.get_secret_value().encode(), policy,
                   DeadLetters(producer, DLQ_TOPIC, "notify", metrics.dead_letter),
                   timeout=settings.webhook_timeout_seconds, on_outcome=metrics.webhook)
    d.restore(read_to_end(settings.kafka_bootstrap, DELIVERIES_TOPIC))
    log.info("webhook ledger: %d deliveries already done", len(d.ledger))
    try:
        d.run(should_stop, idle_exit=idle_exit)
    finally:
        consumer.close()
        producer.flush(30)
    return d
