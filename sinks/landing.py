"""`cem sink`: the landing role, the only writer of ClickHouse (DESIGN.md "Embedded ClickHouse
is single-process"). A plain confluent-kafka consumer loop, not Faust: it never decodes a
container file, so Faust's per-record cost would dominate.

Guarantees:
* **at-least-once from Kafka, exactly-once rows**: offsets are committed only after the insert
  returned; every insert carries a dedup token from (topic, partition, first, last offset);
* **one insert per table per cut**: every partition batch of a table cut together goes into one
  insert (ClickHouse's cost is per insert and per part: ~1 insert/s/table at steady state), or
  into up to `insert_threads` inserts of about `max_rows` each for a large cut;
* **same inserts after a crash**: before inserting, each partition's planned last offset and the
  id of the insert it belongs to are committed as offset metadata (`cem-plan:<last>:<cut id>`)
  at the range's first offset; after a restart each planned range is cut at exactly that offset
  and held until every range of the same insert (that this sink still owns) is whole, so the
  replayed insert carries the same token and bytes and ClickHouse drops it (if its partitions
  went to different sinks meanwhile, the replay differs and ReplacingMergeTree removes the
  doubles at merge / FINAL);
* **one cut in flight**: a cut's inserts run on background threads (`insert_threads` at a time)
  while the loop consumes and scans the next cut (chdb and the HTTP client release the GIL while
  ClickHouse works, so reading Kafka overlaps inserting); the next cut waits for them, so offsets
  are still committed in order and only after their rows are in;
* **backpressure**: while ClickHouse is down or refuses inserts for a reason other than their
  data, the insert thread retries with capped backoff (`INSERT_BACKOFF`) until it succeeds — for
  as long as the outage lasts, each round counted (cem_sink_insert_errors_total) and logged: the
  rows must neither be dropped nor block a restart loop, and a new sink would wait for the same
  server — and the consumer pauses as soon as the next batch is due (lag grows, memory does not:
  at most one batch in flight and one being filled);
* **erasures** (cem.privacy.erasures, `sinks/erasure.py`) apply once everything that was in the
  landed topics when the erasure was read has been inserted (its high-water marks then are the
  barrier), so rows already on their way are deleted too; its offset is committed after the
  audit row is written, and a failed erasure is retried every few seconds while landing goes on;
  30 s later it runs once more by the erased ids alone (rows of events a replica resolved to
  them just before it saw the erasure), in memory: a restart skips that second pass;
* bad records go to cem.dlq with their reason; they never stop the loop. An insert ClickHouse
  refuses is halved until the refused rows are found (`_refused`): those are dead-lettered,
  the rest land.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Callable

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from confluent_kafka import Consumer, KafkaError, TopicPartition

from clickhouse_connect.driver.exceptions import ClickHouseError

from cem import metrics
from cem.retry import Backoff
from cem.kafka.connection import KafkaConnection
from cem.kafka.errors import kafka_error
from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import DecodeError, container_schema_json, decode_record
from .batch import PartitionBatch, is_container, plan_cut, split_insert
from .clickhouse.client import ClickHouse
from cem.kafka.dlq import DeadLetters
from cem.privacy import Erasure
from cem.settings import ERASURES_TOPIC

log = logging.getLogger(__name__)
PLAN_PREFIX = "cem-plan:"
#: An erasure is applied once more, by profile id, this long after it was done.
RECHECK_SECONDS = 30.0
#: Tables fed by JSONEachRow records (cem's low-volume derived topics).
JSON_TABLES = {"sessions", "journeys", "identity_merges", "negative_moments", "alerts", "customer_lifecycle"}


class CommitFailed(RuntimeError):
    """Offsets could not be committed within the patience given: the broker stayed away."""


@dataclass
class LandingCounts:
    records: int = 0
    rows: int = 0
    inserts: int = 0
    dead: int = 0
    retries: int = 0
    busy_seconds: float = 0.0  # from the first record consumed to the last insert committed


def consumer_config(kafka: KafkaConnection, group: str, **extra: Any) -> dict[str, Any]:
    cfg = kafka.client_config(**{
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 128 * 1024,
        "max.poll.interval.ms": 600_000,
        # a killed sink's partitions move to its replacement within seconds (heartbeats run on
        # librdkafka's own thread, so a long insert never looks like a dead member)
        "session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000})
    cfg.update(extra)
    return cfg


class Landing:
    def __init__(self, client: ClickHouse, consumer: Consumer, dead: DeadLetters,
                 registry: SchemaRegistry, tables: dict[str, str], *, max_rows: int = 100_000,
                 max_seconds: float = 1.0, insert_threads: int = 1, progress_seconds: float = 30.0,
                 eraser: Any = None):
        self._ch = client
        self._progress_seconds = progress_seconds  # one log line per this many seconds
        self._consumer = consumer
        self._dead = dead
        self._registry = registry
        self._tables = tables
        self._max_rows = max_rows
        self._threads = insert_threads
        #: a cut is due at this many rows: up to `insert_threads` inserts of about max_rows each
        self._cut_rows = max_rows * insert_threads
        self._max_seconds = max_seconds
        self._latest = registry.latest("touchpoint")
        self._latest_json = container_schema_json(self._latest.parsed)
        self._columns = {t: self._table_columns(t) for t in set(tables.values())}
        self._json_topics = {t for t, table in tables.items() if table in JSON_TABLES}
        self._batches: dict[tuple[str, int], PartitionBatch] = {}
        #: a crashed run's plan per partition: (last offset of its cut, the cut's id)
        self._plans: dict[tuple[str, int], tuple[int, str]] = {}
        #: planned batches already whole, waiting for the rest of their cut: cut id -> batches
        self._held: dict[str, list[PartitionBatch]] = {}
        self._opened: float | None = None
        self._rows = 0  # rows in self._batches
        self._schema_ok: dict[str, str | None] = {}
        self._inserter = ThreadPoolExecutor(max_workers=insert_threads, thread_name_prefix="cem-insert")
        #: the cut in flight (its inserts) and the offsets to commit once they are all done
        self._pending: tuple[list[Future], list[TopicPartition]] | None = None
        self._first_data: float | None = None
        self._failed = False
        self._eraser = eraser
        #: erasures read, waiting for their barrier: (partition, offset, erasure, high-water marks)
        self._erasures: list[tuple[int, int, Erasure, dict[tuple[str, int], int]]] = []
        self._erasure_retry = 0.0
        #: erasures to apply once more, by profile id only, RECHECK_SECONDS after they were done
        self._rechecks: list[tuple[float, Erasure]] = []
        self.counts = LandingCounts()

    # -- consumer group callbacks ---------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in consumer.committed(partitions, timeout=30):
            meta = tp.metadata or ""
            if meta.startswith(PLAN_PREFIX):
                last, _, cut = meta[len(PLAN_PREFIX):].partition(":")
                self._plans[(tp.topic, tp.partition)] = (int(last), cut or f"{tp.topic}:{tp.partition}")
                log.info("resuming %s[%d] at %d with planned batch end %s", tp.topic, tp.partition,
                         tp.offset, meta)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._erasures = [e for e in self._erasures if (ERASURES_TOPIC, e[0]) not in revoked]  # next owner redoes them
        if self._failed:
            return  # closing after a failure: what is not committed is replayed by the next owner
        # inside a poll: wait for the insert in flight without polling again
        self._flush([k for k in self._batches if k in revoked], final=True, polling=False)
        for key in revoked:
            self._plans.pop(key, None)

    # -- main loop ----------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool], idle_exit: float | None = None) -> LandingCounts:
        """Consume, batch and insert until `should_stop()`; flush what is pending before return.
        With `idle_exit` (a drain run), also flush as soon as a poll comes back empty and
        return once nothing arrived for that many seconds."""
        topics = list(self._tables) + ([ERASURES_TOPIC] if self._eraser is not None else [])
        self._consumer.subscribe(topics, on_assign=self.on_assign,
                                 on_revoke=self.on_revoke)
        last_data = time.monotonic()
        next_lag = 0.0
        next_log = time.monotonic() + self._progress_seconds
        logged = (0, 0, 0)  # rows, inserts, dead letters at the last progress line
        try:
            while not should_stop():
                if time.monotonic() >= next_lag or time.monotonic() >= next_log:
                    lag = self._report_lag()
                    next_lag = time.monotonic() + 10.0
                    if time.monotonic() >= next_log:
                        logged = self._log_progress(logged, lag)
                        next_log = time.monotonic() + self._progress_seconds
                msgs = self._consumer.consume(num_messages=2000, timeout=0.1)
                if msgs:
                    last_data = time.monotonic()
                    if self._first_data is None:
                        self._first_data = time.perf_counter()
                for msg in msgs:
                    self._add(msg)
                    if self._rows >= self._cut_rows:
                        self._flush(list(self._batches))  # a full insert: cut now, not per poll
                # a drain run (idle_exit: backfill, import, bench) has nothing to wait for once
                # the input is drained, so the tail is flushed at once instead of lingering for
                # max_seconds; a long-running sink keeps the timer (about one insert per second)
                if self._due() or (idle_exit is not None and not msgs and self._batches):
                    self._flush(list(self._batches))
                if self._pending is not None and all(j.done() for j in self._pending[0]):
                    self._settle()  # commit as soon as the rows are in, not at the next cut
                if self._erasures:
                    self._erase()
                if self._rechecks and self._rechecks[0][0] <= time.monotonic():
                    self._recheck()
                if idle_exit is not None and time.monotonic() - last_data > idle_exit \
                        and not self._batches and self._pending is None and not self._erasures:
                    break
            self._flush(list(self._batches), final=True)
        except BaseException:
            # leave as a crash does: closing the consumer revokes its partitions, and flushing
            # then would insert and commit past the failure (and hide it behind a second error)
            self._failed = True
            raise
        finally:
            self._inserter.shutdown(wait=True)
            self._consumer.close()
        return self.counts

    def _report_lag(self) -> int | None:
        """cem_consumer_lag_records per assigned partition (log end minus our position); returns
        their sum (None when it cannot be known: no position yet, or the broker did not answer)."""
        total: int | None = None
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                if tp.offset >= 0:
                    _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                    metrics.lag(tp.topic, tp.partition, max(0, high - tp.offset))
                    total = (total or 0) + max(0, high - tp.offset)
        except Exception:  # noqa: BLE001 - metrics never stop landing
            return None
        return total

    def _log_progress(self, last: tuple[int, int, int], lag: int | None) -> tuple[int, int, int]:
        """One line per interval, so an operator sees the sink work (and fall behind) without
        a metrics server: rows and inserts since the last line, totals, dead letters, lag."""
        c = self.counts
        now = (c.rows, c.inserts, c.dead)
        log.info("landed %d rows in %d inserts in the last %.0f s (%d rows in all), %d to the DLQ; lag %s",
                 now[0] - last[0], now[1] - last[1], self._progress_seconds, c.rows, now[2] - last[2],
                 "unknown (no partitions yet)" if lag is None else f"{lag} records")
        return now

    def _add(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        key = (msg.topic(), msg.partition())
        offset = msg.offset()
        if key[0] == ERASURES_TOPIC:
            self._read_erasure(msg)
            return
        plan = self._plans.get(key)
        if plan is not None and offset > plan[0]:
            self._hold(key)  # the crashed run's range is whole (its last record may be gone)
            plan = None
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = PartitionBatch(key[0], key[1], self._latest.parsed,
                                                        self._latest_json)
            if self._opened is None:
                self._opened = time.monotonic()
        value = msg.value()
        self.counts.records += 1
        before = batch.rows
        headers = msg.headers()
        if headers and any(k == "cem-control" for k, _ in headers):
            batch.skip(offset)  # control records steer stream state; they are not rows
            if plan is not None and offset >= plan[0]:
                self._hold(key)
            return
        try:
            if key[0] in self._json_topics:
                n = batch.add_json(offset, value or b"")
                metrics.events_in(key[0], n)
                return
            if is_container(value):
                n = batch.add_container(offset, value, self._check_schema)
            else:
                decoded = decode_record(value, self._registry, self._latest.parsed)
                for event in decoded.events:
                    batch.add_event(offset, event)
                n = len(decoded.events)
            metrics.events_in(key[0], n)
        except DecodeError as bad:
            batch.skip(offset)
            self.counts.dead += 1
            self._dead.send(value, bad.reason, bad.detail, topic=key[0], partition=key[1], offset=offset)
        finally:
            self._rows += batch.rows - before
            if plan is not None and offset >= plan[0]:
                self._hold(key)

    def _read_erasure(self, msg: Any) -> None:
        try:
            erasure = Erasure.from_json(json.loads(msg.value()))
        except (TypeError, ValueError, KeyError) as err:
            self.counts.dead += 1
            self._dead.send(msg.value(), "bad_erasure", f"{type(err).__name__}: {err}"[:200], topic=msg.topic(),
                            partition=msg.partition(), offset=msg.offset(), key=msg.key(),
                            source_headers=msg.headers())
            self._commit([TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)])
            return
        marks = {}
        for tp in self._consumer.assignment():
            if tp.topic != ERASURES_TOPIC:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                if high > low:  # an empty partition holds nothing back
                    marks[(tp.topic, tp.partition)] = high
        self._erasures.append((msg.partition(), msg.offset(), erasure, marks))

    def _erase(self) -> None:
        """Apply the first waiting erasure once its barrier is passed: every landed partition
        read up to its mark (position or committed offset) and nothing of it left uninserted.
        It runs on an insert thread while the consumer, paused, keeps polling (a large table
        takes seconds per million rows; the group must not take this member for dead)."""
        if time.monotonic() < self._erasure_retry:
            return
        first = self._erasures[0]
        partition, offset, erasure, marks = first
        tps = [TopicPartition(t, p) for t, p in marks]
        if tps:
            done = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(tps)}
            for tp in self._consumer.committed(tps, timeout=10):
                done[(tp.topic, tp.partition)] = max(done.get((tp.topic, tp.partition), -1), tp.offset)
            if any(done.get(k, -1) < high for k, high in marks.items()):
                self._erasure_retry = time.monotonic() + 0.2  # still reading what was there before it
                return
        self._flush(list(self._batches))
        self._settle()
        if self._batches or self._held or self._plans:
            return  # a crashed run's insert is being re-formed: after it
        job = self._inserter.submit(self._eraser.apply, erasure)
        self._consumer.pause(self._consumer.assignment())
        try:
            while wait([job], timeout=0.5).not_done:
                msg = self._consumer.poll(0.1)  # keeps the membership; a rebalance may hand records over
                if msg is not None:
                    self._add(msg)
        finally:
            self._consumer.resume(self._consumer.assignment())
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - ClickHouse away: landing goes on, erasure retried
            log.warning("erasure %s failed, retrying in 5 s: %s", erasure.request.erasure_id, str(err)[:300])
            self._erasure_retry = time.monotonic() + 5.0
            return
        if self._erasures and self._erasures[0] is first:  # not revoked meanwhile (its next owner redoes it)
            self._erasures.pop(0)
            self._commit([TopicPartition(ERASURES_TOPIC, partition, offset + 1)])
            # an event a replica resolved to the erased id just before it saw the erasure may land
            # after it: delete by the erased ids once more (never by identifier: a customer who
            # came back since is someone new, with the same identifiers)
            self._rechecks.append((time.monotonic() + RECHECK_SECONDS, replace(erasure, digests=())))

    def _recheck(self) -> None:
        _, erasure = self._rechecks.pop(0)
        try:
            deleted = self._eraser.apply(erasure)
        except Exception as err:  # noqa: BLE001 - best effort: the first pass is on record
            log.warning("second pass of erasure %s failed: %s", erasure.request.erasure_id, str(err)[:300])
            return
        if any(deleted.values()):
            log.info("second pass of erasure %s deleted late rows: %s", erasure.request.erasure_id, deleted)

    def _check_schema(self, schema_json: str) -> None:
        problem = self._schema_ok.get(schema_json, "?")
        if problem == "?":
            try:
                reader = avro.schema.parse(json.dumps(self._latest.raw))
                writer = avro.schema.parse(schema_json)
                res = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
                problem = None if res.compatibility is SchemaCompatibilityType.compatible else \
                    "; ".join(sorted(res.messages))[:200]
            except Exception as err:  # unparsable schema text
                problem = f"{type(err).__name__}: {err}"[:200]
            self._schema_ok[schema_json] = problem
        if problem is not None:
            raise DecodeError("schema_mismatch", f"the batch's schema does not resolve to the "
                              f"touchpoint schema: {problem}")

    def _due(self) -> bool:
        if not self._batches or self._opened is None:
            return False
        return self._rows >= self._cut_rows or time.monotonic() - self._opened >= self._max_seconds

    def _hold(self, key: tuple[str, int]) -> None:
        """A crashed run's planned range of `key` is whole: keep its batch aside until every
        partition of the same cut (that this sink still owns) is whole too, then insert them
        together, so the replayed insert has the crashed one's token and ClickHouse drops it."""
        _, cut = self._plans.pop(key)
        batch = self._batches.pop(key, None)
        held = self._held.setdefault(cut, [])
        if batch is not None:
            self._rows -= batch.rows
            if batch.first is not None:
                held.append(batch)
        if not any(c == cut for _, c in self._plans.values()):
            self._submit(self._held.pop(cut), replay=True)

    def _flush(self, keys: list[tuple[str, int]], final: bool = False, polling: bool = True) -> None:
        """Cut the batches of `keys` and hand their inserts to the insert threads, after the cut
        in flight has settled (its offsets committed). A partition replaying a crashed run's
        planned range is left to `_hold`, unless `final` (revoke, shutdown) cuts everything;
        `final` also waits for this cut."""
        # settle first: records polled meanwhile join the batches about to be cut, and a
        # rebalance meanwhile flushes (and drops) the revoked partitions' batches itself
        self._settle(polling)
        if final:  # each held group as it was planned (part of it may still be missing)
            while self._held:  # (submitting settles and polls, which may hold another)
                self._submit(self._held.popitem()[1], polling, replay=True)
        cut = []
        waiting = {(b.topic, b.partition) for held in self._held.values() for b in held}
        for key in keys:
            if key in self._plans or key in waiting:
                if not final:
                    # replaying a crashed run's range (cut when its cut is whole, `_hold`), or
                    # later records of a partition whose replayed range still waits: not before it
                    continue
                self._plans.pop(key, None)
            batch = self._batches.pop(key, None)
            if batch is not None and batch.first is not None:
                cut.append(batch)
        self._rows = sum(b.rows for b in self._batches.values())
        if not self._batches:
            self._opened = None
        self._submit(cut, polling)
        if final:
            self._settle(polling)

    def _submit(self, cut: list[PartitionBatch], polling: bool = True, replay: bool = False) -> None:
        """One insert per table (and writer schema) over the cut batches, after a write-ahead
        commit of each batch's planned end and the cut's id (so a restart cuts the same ranges
        together again); offsets are committed when all of them are in (`_settle`). `replay`:
        the cut is a crashed run's insert group re-formed (`_hold`), inserted as it was planned
        (never split again, or its rows would land twice under new tokens)."""
        if not cut:
            return
        self._settle(polling)
        by_table: dict[str, list[PartitionBatch]] = {}
        for batch in cut:
            by_table.setdefault(self._tables[batch.topic], []).append(batch)
        planned = plan_cut(by_table, self._columns, self._max_rows, self._threads, replay=replay)
        marks = [TopicPartition(topic, partition, first, metadata=PLAN_PREFIX + mark)
                 for p in planned for topic, partition, first, mark in p.marks]
        if marks:
            self._commit(marks)  # write-ahead: remember where each batch ends before inserting it
        commits = [TopicPartition(b.topic, b.partition, b.last + 1) for b in cut
                   if b.last is not None]  # (every one: a batch is made for a record)
        self._pending = ([self._inserter.submit(self._insert, p.table, ins) for p in planned for ins in p.inserts],
                         commits)

    def _settle(self, polling: bool = True) -> None:
        """Wait for the cut in flight, then commit its offsets. While it takes long (ClickHouse
        down), the consumer is paused and polled so it keeps its group membership; a record that
        polling hands over may cut and submit another insert, which is settled too."""
        while self._pending is not None:
            jobs, commits = self._pending
            paused = False
            while polling and wait(jobs, timeout=0.5).not_done:
                if not paused:
                    self._consumer.pause(self._consumer.assignment())
                    paused = True
                # keeps the member alive; returns nothing from paused partitions, but a
                # rebalance meanwhile may hand over unpaused ones: their records are kept
                msg = self._consumer.poll(0.1)
                if msg is not None:
                    self._add(msg)
            if paused:
                self._consumer.resume(self._consumer.assignment())
            if self._pending is None or self._pending[0] is not jobs:
                continue  # settled meanwhile, inside a rebalance callback or a nested cut
            try:
                for job in jobs:
                    job.result()  # re-raises what an insert thread could not handle
            finally:
                self._pending = None
            self._commit(commits)
            if self._first_data is not None:
                self.counts.busy_seconds = time.perf_counter() - self._first_data

    def _insert(self, table: str, ins: Any) -> None:
        """Insert thread: one insert, retried with capped backoff until it succeeds or ClickHouse
        refuses its data; then the rows it refuses are found by halving (`_refused`)."""
        refused = self._attempt(table, ins)
        if refused is not None:
            self._refused(table, ins, refused)

    def _attempt(self, table: str, ins: Any) -> Exception | None:
        """Insert `ins`, retrying while ClickHouse is unavailable; None once it is in, or the
        error with which ClickHouse refused its data (retrying cannot help)."""
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                self._ch.raw_insert(table, ins.columns, insert_block=ins.data, fmt=ins.fmt,
                                    settings={"insert_deduplication_token": ins.token,
                                              # replacing happens at merge/FINAL; sorting out
                                              # duplicates inside each insert halves throughput
                                              "optimize_on_insert": 0})
                break
            except Exception as err:  # noqa: BLE001 - ClickHouse down or refusing: back off
                if refuses_data(err):
                    return err
                attempt += 1
                delay = INSERT_BACKOFF.delay(attempt)
                self.counts.retries += 1
                metrics.SINK_ERRORS.labels(table).inc()
                log.warning("insert into %s (%d rows, token %s) failed (attempt %d), retry in %.1f s: %s",
                            table, ins.rows, ins.token, attempt, delay, str(err)[:300])
                time.sleep(delay)
        elapsed = time.perf_counter() - started
        self.counts.rows += ins.rows
        self.counts.inserts += 1
        metrics.SINK_ROWS.labels(table).inc(ins.rows)
        metrics.SINK_BATCH_ROWS.labels(table).observe(ins.rows)
        metrics.SINK_INSERT_SECONDS.labels(table).observe(elapsed)
        return None

    def _refused(self, table: str, ins: Any, err: Exception) -> None:
        """ClickHouse refused `ins`'s data (a record it cannot read, a value it cannot store).
        Halve it and insert each half (`split_insert`: tokens derived from the insert's, so a
        replay halves the same way and what landed is dropped), halving again what is refused,
        so one bad row costs its own row and not the insert's 100 k; at most `BISECT_INSERTS`
        extra inserts per refused insert. What is still refused then (a single row, or a part
        the budget did not reach) is dead-lettered with ClickHouse's reason."""
        log.error("insert into %s (%d rows, token %s) refused its data, looking for the rows it "
                  "refuses: %s", table, ins.rows, ins.token, str(err)[:300])
        budget = BISECT_INSERTS
        refused = [(ins, err)]
        while refused:
            part, why = refused.pop()
            halves = split_insert(part) if budget >= 2 else []
            if not halves:
                # headers name the record the rows came from (the first one if several)
                topic, partition, offset, _ = part.sources[0] if part.sources else part.ranges[0]
                records = len({s[:3] for s in part.sources})
                origin = f", from {records} records" if records > 1 else ""
                self._dead.send(part.data, "insert_rejected",
                                f"{table} (insert {part.token}, {part.rows} rows{origin}): {str(why)[:500]}",
                                topic=topic, partition=partition, offset=offset)
                self.counts.dead += 1
                continue
            budget -= len(halves)
            for half in halves:
                problem = self._attempt(table, half)
                if problem is not None:
                    refused.append((half, problem))

    def _commit(self, offsets: list[TopicPartition], patience: float = 300.0) -> None:
        """Commit after the inserts. While the broker is unreachable, retry (the consumer stays
        put) for up to `patience` seconds; when the group moved on without this member (fenced
        after a long outage) give the commit up: the rows are in ClickHouse, the partitions'
        next owner replays from the last commit and re-forms the same inserts, which ClickHouse
        drops as duplicates (dedup tokens)."""
        fenced = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                  KafkaError._NO_OFFSET}
        deadline = time.monotonic() + patience
        attempt = 0
        while True:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except Exception as err:  # noqa: BLE001
                kafka_err = kafka_error(err)
                if kafka_err is not None and kafka_err.code() in fenced:
                    log.warning("offset commit refused (%s): this sink left the group during an outage; "
                                "its partitions replay from the last commit and ClickHouse drops the replay", err)
                    return
                attempt += 1
                if time.monotonic() > deadline:
                    raise CommitFailed(f"offset commit failed for {patience:.0f} s; the broker is unreachable. Rows "
                                       "inserted so far are safe: a restart replays them and ClickHouse drops the "
                                       "replay") from err
                delay = COMMIT_BACKOFF.delay(attempt)
                log.warning("offset commit failed (attempt %d), retry in %.1f s: %s", attempt, delay, err)
                time.sleep(delay)

    def _table_columns(self, table: str) -> frozenset[str]:
        rows = self._ch.query(f"SELECT name FROM system.columns WHERE database = currentDatabase() "
                              f"AND table = '{table}' AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')").result_rows
        if not rows:
            raise RuntimeError(f"table {table} does not exist; run `cem ddl --apply` first")
        return frozenset(r[0] for r in rows)


#: Extra inserts landing may spend halving one refused insert (one bad row in 100 k takes ~34).
BISECT_INSERTS = 128
#: Waits between attempts of an offset commit the broker did not take (for up to `_commit`'s patience).
COMMIT_BACKOFF = Backoff(first=0.4, cap=5.0)
#: Waits between attempts of an insert ClickHouse did not take (down, overloaded): 0.2 s … 10 s.
INSERT_BACKOFF = Backoff(first=0.2, cap=10.0)
#: ClickHouse error codes (with their names, checked against the engine by the tests) that
#: refuse an insert's data itself: sending the same bytes again cannot succeed.
REFUSED_DATA_CODES = {
    6: "CANNOT_PARSE_TEXT", 8: "THERE_IS_NO_COLUMN", 25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING", 27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", 33: "CANNOT_READ_ALL_DATA",
    38: "CANNOT_PARSE_DATE", 41: "CANNOT_PARSE_DATETIME", 44: "ILLEGAL_COLUMN", 53: "TYPE_MISMATCH",
    72: "CANNOT_PARSE_NUMBER", 117: "INCORRECT_DATA", 376: "CANNOT_PARSE_UUID", 467: "CANNOT_PARSE_BOOL",
    # bytes ClickHouse's Avro reader refuses (an 11-byte varint, a boolean of 5): STD_EXCEPTION
    # wrapping avro::Exception on insert, AVRO_EXCEPTION elsewhere
    1001: "STD_EXCEPTION", 748: "AVRO_EXCEPTION",
}


def refuses_data(err: BaseException) -> bool:
    """True when ClickHouse refused the insert's data itself (clickhouse-connect's error `code`
    is one of REFUSED_DATA_CODES), not when it is unreachable, overloaded or failing otherwise."""
    return isinstance(err, ClickHouseError) and getattr(err, "code", None) in REFUSED_DATA_CODES
