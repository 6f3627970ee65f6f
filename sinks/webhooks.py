"""`cem notify`: cem.alerts → the owner team's HTTP webhook (signing, retries and the delivery
ledger as `cem.webhooks` describes them).

Loop contract:
- Reads cem.alerts (JSONEachRow batch records) in its own consumer group; an alert version
  routed with delivery 'webhook' whose team has an endpoint becomes a job, unless the ledger
  already holds its delivery id (a replay of the pipeline re-emits the same id).
- Jobs are attempted when due, one HTTP request at a time (alerts are rare next to events);
  failures wait out their backoff in a heap, so one broken endpoint never holds up the others.
- An outcome (delivered, parked, expired) is written to the compacted ledger topic and flushed
  before the job counts as done; a delivery parked for the first time also goes to cem.dlq
  (reason `webhook_parked`) with what the endpoint answered, and its ledger record keeps the body.
- Once partitions are assigned (so a restart after a fix retries at once), then every
  `park_retry_seconds`, a retry round re-reads the ledger (so `cem notify --retry-parked`
  and other dispatchers' outcomes are seen) and acts on `cem.webhooks.plan_round` for the alert
  partitions this dispatcher owns: one probe per endpoint; a probe accepted re-queues every
  other delivery parked for that endpoint; parked longer than `park_hours` → `expired` (ledger
  and cem.dlq, reason `webhook_expired`). Parked deliveries are never dropped silently.
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

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from cem.webhooks import Ledger, RetryPolicy, delivery_id, endpoint_now, payload, plan_round, sign, wants_webhook
from cem.kafka.dlq import DeadLetters
from cem.kafka.connection import KafkaConnection

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


def replay_ledger(ledger: Ledger, records: Any, skip: Any = ()) -> Ledger:
    """Apply ledger records (confluent Messages, in offset order) to `ledger`; tombstones and
    the ids in `skip` are passed over, an unreadable record is logged and skipped."""
    for m in records:
        if m.value() is None:
            continue
        did = m.key().decode()
        if did in skip:
            continue
        try:
            entry = json.loads(m.value())
            ledger.record(did, entry["outcome"], entry)
        except (ValueError, KeyError, TypeError):
            log.warning("ledger record %s is unreadable; skipped", did)
    return ledger


LEDGER_FLUSH_ROUNDS = 10  # x 30 s: rides out a broker restart, gives up on a broker gone for good


def _flush_ledger(producer: Producer, rounds: int = LEDGER_FLUSH_ROUNDS, wait: float = 30.0) -> None:
    """Wait until Kafka has every ledger record produced so far; an outcome counts only then.

    Waits up to `rounds` x `wait` seconds, logging each round still waiting (a broker restart
    takes seconds to tens of seconds under load), then raises: the dispatcher stops rather than
    commit past outcomes Kafka never acknowledged; a restart replays them from the ledger."""
    for done in range(1, rounds + 1):
        left = producer.flush(wait)
        if not left:
            return
        log.warning("webhook ledger: %d record(s) not yet acknowledged by Kafka after %.0f s (round %d of %d)",
                    left, done * wait, done, rounds)
    raise RuntimeError(f"the webhook ledger was not acknowledged by Kafka within {rounds * wait:.0f} s; "
                       "is the broker up? `cem notify` stops here and resends from its ledger when restarted")


@dataclass(order=True)
class _Job:
    due: float
    did: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    records: list[tuple[int, int]] = field(compare=False, default_factory=list)
    attempts: int = field(compare=False, default=0)
    #: the ledger entry of a parked delivery this job retries (None: a first delivery)
    parked: dict[str, Any] | None = field(compare=False, default=None)
    probe: bool = field(compare=False, default=False)   # one attempt; failure re-parks it


class Dispatcher:
    def __init__(self, consumer: Consumer, producer: Producer, topic: str, ledger_topic: str,
                 endpoints: dict[str, str], secret: bytes, policy: RetryPolicy, dead: DeadLetters,
                 timeout: float = 5.0, post: Post = http_post, on_outcome: Callable[[str], None] | None = None,
                 park_retry_seconds: float = 300.0, park_hours: float = 72.0,
                 refresh: Callable[[], Any] | None = None, on_waiting: Callable[[int], None] | None = None):
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
        self._park_retry = park_retry_seconds
        self._park_ms = int(park_hours * 3_600_000)
        self._refresh = refresh
        self._on_waiting = on_waiting
        self._next_round = 0.0  # the first round runs as soon as partitions are assigned
        self.ledger = Ledger()
        self._heap: list[_Job] = []
        self._inflight: dict[str, _Job] = {}
        self._remaining: dict[tuple[int, int], int] = {}   # (partition, offset) -> jobs not done
        self._seen: dict[int, list[int]] = {}              # partition -> offsets in order
        self.delivered = 0
        self.parked = 0
        self.expired = 0

    def restore(self, records: Any) -> None:
        """Replay the ledger (an iterable of confluent Messages) before the first poll, and again
        at each retry round; entries of jobs in flight here are left alone (this process is
        writing them)."""
        replay_ledger(self.ledger, records, skip=self._inflight)
        if self._on_waiting:
            self._on_waiting(len(self.ledger.waiting))

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
        if job.probe and verdict == "retry":
            verdict = "parked"  # a probe is one attempt: the endpoint is still down
        if verdict == "retry":
            job.due = time.monotonic() + self._policy.delay(job.attempts, self._rng, retry_after)
            heapq.heappush(self._heap, job)
            log.info("webhook %s attempt %d failed (%s); retrying", job.did, job.attempts, detail)
            if self._on_outcome:
                self._on_outcome("retried")
            return
        self._finish(job, verdict, status, detail)

    def _finish(self, job: _Job, outcome: str, status: int | None, detail: str) -> None:
        now = int(time.time() * 1000)
        record: dict[str, Any] = {"outcome": outcome, "attempts": job.attempts, "status": status, "url": job.url,
                                  "detail": detail, "at": now}
        first_park = outcome == "parked" and job.parked is None
        if outcome == "parked":
            before = job.parked or {}
            record.update(body=job.body.decode(), parked_at=before.get("parked_at") or now,
                          partition=job.records[0][0] if job.records else before.get("partition"),
                          rounds=(before.get("rounds") or 0) + (job.parked is not None))
        self._producer.produce(self._ledger_topic, key=job.did.encode(), value=json.dumps(record).encode())
        if first_park:
            self._dead.send(job.body, "webhook_parked",
                            f"alert delivery {job.did} to {job.url} gave up after {job.attempts} attempt(s): "
                            f"{detail or status}. It is retried every few minutes until the endpoint "
                            f"answers; after fixing the receiver or CEM_WEBHOOK_ENDPOINTS, "
                            f"`cem notify --retry-parked` sends it at once", topic=self._topic,
                            partition=record["partition"], offset=job.records[0][1] if job.records else -1)
            self.parked += 1
            log.warning("webhook %s parked after %d attempt(s): %s", job.did, job.attempts, detail or status)
        elif outcome == "parked":
            log.info("webhook %s still failing on retry round %d: %s", job.did, record["rounds"], detail or status)
        else:
            self.delivered += 1
        _flush_ledger(self._producer)
        self.ledger.record(job.did, outcome, record)
        del self._inflight[job.did]
        for rec in job.records:
            self._remaining[rec] -= 1
        if self._on_outcome:
            self._on_outcome(outcome if first_park or outcome != "parked" else "reparked")
        if job.probe and outcome == "delivered":
            self._requeue_endpoint(job.url)
        if self._on_waiting:
            self._on_waiting(len(self.ledger.waiting))

    # -- parked deliveries ----------------------------------------------------------------------------
    def _owned(self) -> list[int]:
        return [tp.partition for tp in self._consumer.assignment() if tp.topic == self._topic]

    def _queue_parked(self, did: str, url: str, probe: bool) -> None:
        entry = self.ledger.waiting[did]
        job = self._inflight[did] = _Job(time.monotonic(), did, url, entry["body"].encode(), parked=entry,
                                         probe=probe)
        heapq.heappush(self._heap, job)

    def _requeue_endpoint(self, url: str) -> None:
        """The endpoint accepted a probe: every other delivery parked for it goes out again."""
        owned = set(self._owned())
        for did, entry in list(self.ledger.waiting.items()):
            if did not in self._inflight and entry.get("partition") in owned and \
                    endpoint_now(entry, self._endpoints) == url:
                self._queue_parked(did, url, probe=False)

    def _expire(self, did: str) -> None:
        entry = self.ledger.waiting[did]
        record = dict(entry, outcome="expired", at=int(time.time() * 1000))
        record.pop("body", None)
        self._producer.produce(self._ledger_topic, key=did.encode(), value=json.dumps(record).encode())
        self._dead.send(entry["body"].encode(), "webhook_expired",
                        f"alert delivery {did} was parked for longer than the retry window "
                        f"(CEM_WEBHOOK_PARK_HOURS) and is no longer retried; last answer: "
                        f"{entry.get('detail') or entry.get('status')}", topic=self._topic,
                        partition=entry.get("partition", -1), offset=-1)
        _flush_ledger(self._producer)
        self.ledger.record(did, "expired", record)
        self.expired += 1
        log.warning("webhook %s expired after %d retry round(s)", did, entry.get("rounds") or 0)
        if self._on_outcome:
            self._on_outcome("expired")

    def retry_round(self) -> None:
        """One retry round over the parked deliveries (see the module contract)."""
        if self._refresh is not None:
            try:
                self.restore(self._refresh())
            except (KafkaException, TimeoutError, RuntimeError) as err:
                # The ledger topic cannot be read right now (broker down or restarting): this
                # round would plan on a stale ledger, so it waits for the next one.
                log.warning("webhook retry round skipped: the delivery ledger could not be read (%s); "
                            "next round in %.0f s", err, self._park_retry)
                return
        plan = plan_round(self.ledger.waiting, int(time.time() * 1000), self._owned(), self._endpoints,
                          self._park_ms, skip=self._inflight)
        for did in plan.expire:
            self._expire(did)
        for did, url in plan.requeue.items():
            self._queue_parked(did, url, probe=False)
        for did, url in plan.probes.items():
            self._queue_parked(did, url, probe=True)
        if plan.unroutable:
            log.warning("%d parked webhook deliveries have no endpoint for their team in "
                        "CEM_WEBHOOK_ENDPOINTS any more; they stay parked", len(plan.unroutable))
        if self._on_waiting:
            self._on_waiting(len(self.ledger.waiting))

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
            if time.monotonic() >= self._next_round and self._owned():
                self.retry_round()
                self._next_round = time.monotonic() + self._park_retry
            if msgs or self._heap:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break


def run_notify(settings: Any, idle_exit: float | None = None) -> Dispatcher:
    """Entry point of `cem notify`: restore the ledger, then deliver until SIGTERM/SIGINT."""
    from cem import metrics
    from cem.shutdown import stop_requested
    from cem.kafka.publisher import producer_config
    from cem.kafka.topic_reader import read_to_end
    from cem.settings import ALERTS_TOPIC, DELIVERIES_TOPIC, DLQ_TOPIC

    should_stop = stop_requested()
    metrics.serve(settings.notify_metrics_port, settings.metrics_host)
    if not settings.webhook_endpoints:
        log.warning("no CEM_WEBHOOK_ENDPOINTS configured: alerts are read but none is delivered")
    kafka = KafkaConnection.from_settings(settings)
    producer = Producer(producer_config(kafka))
    consumer = Consumer(kafka.client_config(**{"group.id": f"{settings.app_id}-notify",
                                               "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    policy = RetryPolicy(settings.webhook_max_attempts, settings.webhook_backoff_seconds,
                         settings.webhook_backoff_max_seconds)
    d = Dispatcher(consumer, producer, ALERTS_TOPIC, DELIVERIES_TOPIC, dict(settings.webhook_endpoints),
                   settings.webhook_secret.get_secret_value().encode(), policy,
                   DeadLetters(producer, DLQ_TOPIC, "notify", metrics.dead_letter),
                   timeout=settings.webhook_timeout_seconds, on_outcome=metrics.webhook,
                   park_retry_seconds=settings.webhook_park_retry_seconds, park_hours=settings.webhook_park_hours,
                   refresh=lambda: read_to_end(kafka, DELIVERIES_TOPIC),
                   on_waiting=metrics.webhooks_waiting)
    d.restore(read_to_end(kafka, DELIVERIES_TOPIC))
    log.info("webhook ledger: %d deliveries already done, %d parked", len(d.ledger), len(d.ledger.waiting))
    try:
        d.run(should_stop, idle_exit=idle_exit)
    finally:
        consumer.close()
        producer.flush(30)
    return d


def requeue_parked(settings: Any, team: str | None = None) -> int:
    """`cem notify --retry-parked`: mark parked deliveries (of one team, or all) as requeued in
    the ledger; the dispatcher owning each sends it at its next retry round. Returns how many."""
    from cem.kafka.publisher import producer_config
    from cem.kafka.topic_reader import read_to_end
    from cem.settings import DELIVERIES_TOPIC

    kafka = KafkaConnection.from_settings(settings)
    led = replay_ledger(Ledger(), read_to_end(kafka, DELIVERIES_TOPIC))
    chosen = [(did, e) for did, e in led.waiting.items() if e.get("outcome") == "parked" and
              (team is None or json.loads(e["body"])["alert"].get("team") == team)]
    producer = Producer(producer_config(kafka))
    for did, entry in chosen:
        producer.produce(DELIVERIES_TOPIC, key=did.encode(),
                         value=json.dumps(dict(entry, outcome="requeued", at=int(time.time() * 1000))).encode())
    _flush_ledger(producer)
    return len(chosen)
