"""The identity coordinator (single writer of the identifier graph), free of Faust.

Consumes cem.identity.links — the events whose identifiers the replicas could not resolve —
decides each with `IdentityGraph.resolve`, appends the decision to the changelog and merge log,
stamps the canonical customer id on the event and forwards it to cem.touchpoints (and, with a
stage topic, its stage row to cem.stage). For every merge it also sends a control record (header
`cem-control: merge`) to the loser's partition of the stage's input topic (cem.stage, or
cem.touchpoints with CEM_STAGE_HOP=avro), so the customer agent there hands the loser's open
state to the winner; watermarks go to every partition of that topic, behind the events.
An `erase` control request (`cem privacy erase`, the collector's /v1/privacy/erase) removes a
customer from the graph: every identifier of the profile and of the profiles merged into it is
released with a tombstone in cem.identity.map (every replica drops it), their merge-log records
are tombstoned, and an `erase` control goes to each profile's partition of the stage's input topic; the
one to the profile itself carries the `Erasure` that the customer stage passes on to landing
(cem.privacy.erasures) once their state is gone. A replayed request finds nothing left to
release and says so (`found` false); landing keeps the first record of an erasure.
Nothing is acked here; the agent acks after `flush()` (acks after the sink), and nothing decided
here is forwarded before the changelog records of the decision are acknowledged (see `flush`).
"""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import AbstractSet, Any, Callable, Sequence

from confluent_kafka import Producer

from cem.identity import IdentityGraph, Merge, Resolution
from cem.privacy import Erasure, ErasureRequest, erasure_scope, surviving_profile
from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import DecodeError, decode_record
from cem.schemas.stage import stage_row
from cem.schemas.stamp import Stamper
from cem.kafka.dlq import UNKNOWN_KEY, DeadLetters, UnknownKey
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import BatchPublisher
from cem.settings import IDENTITY_MAP_TOPIC, IDENTITY_MERGES_TOPIC
from .control import (CONTROL_HEADER, AwaitHandover, ControlMessage, Erase, MergeAway, Watermark,
                      encode as encode_control, to_json)
from .identity_log import PROFILE_PREFIX, WM_PREFIX, publish_resolution
from .ingest import RESOLUTION, branch_tagged

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, graph: IdentityGraph, registry: SchemaRegistry, producer: Producer,
                 publisher: BatchPublisher, dead: DeadLetters, out_topic: str, out_partitions: int,
                 lateness_ms: int = 600_000, idle_ms: int = 10_000, clock: Any = time.time,
                 quiet_ms: int | None = None,
                 sources: dict[str, tuple[int, int]] | None = None, expected_sources: Sequence[str] = (),
                 merge_log: Callable[[], dict[str, dict]] = dict, stage_topic: str | None = None):
        self.graph = graph
        self._registry = registry
        self._reader = registry.latest("touchpoint").parsed
        self._stamper = Stamper.for_schema(self._reader)
        self._producer = producer
        self._publisher = publisher
        self._dead = dead
        self._out = out_topic
        # the customer stage's input: its own internal topic (events as stage rows and every
        # control record), or cem.touchpoints itself
        self._stage = stage_topic
        self._ctl = stage_topic or out_topic
        # forwards and controls decided since the last flush, in decision order: sent only once
        # the graph's changelog records for them are acknowledged (see flush)
        self._later: list[Callable[[], None]] = []
        self._parts = out_partitions
        self.merges = 0
        self.refusals = 0
        self.erasures = 0
        self._merge_log = merge_log  # () -> {merge id: latest decision}, read only for an erasure
        self._lateness = lateness_ms
        self._idle = idle_ms
        self._quiet = idle_ms if quiet_ms is None else quiet_ms
        self._quiet_since: int | None = None  # when every source went idle (wall clock)
        self._clock = clock
        self._started = int(clock() * 1000)
        self.sources = SourceWatermarks(idle_ms)
        for source in expected_sources:  # every raw partition holds event time back until it
            self.sources.update(source, -(1 << 62), self._started)  # reports or goes idle
        for source, (_wm, wall) in (sources or {}).items():
            # a previous life saw this source; its watermark may be ahead of the offsets the
            # restart replays from, so it starts over (only the fact it existed is kept)
            self.sources.update(source, -(1 << 62), wall)
            self.sources.restored = True
        self.watermark = -(1 << 62)
        self._pending_wm: int | None = None
        # sources with unread raw input (never idle), as of the last tick read; until a tick
        # says otherwise every expected source is busy, so a coordinator replaying a backlog
        # never takes a source for idle before it knows
        self._busy: set[str] = set(expected_sources)

    def process(self, value: bytes | None, topic: str, partition: int, offset: int,
                headers: list | None = None, key: bytes | None | UnknownKey = UNKNOWN_KEY) -> None:
        control = next((v.decode() for k, v in (headers or []) if k == CONTROL_HEADER), None)
        if control is not None:
            body = json.loads(value or b"{}")
            now = int(self._clock() * 1000)
            if control == "unmerge":
                self._unmerge(body["merge"], now)
                return
            if control == "erase":
                if not self._erase(body, now):
                    self._dead.send(value, "bad_erasure_request", "an erase control without a valid request "
                                    "(send it with `cem privacy erase` or POST /v1/privacy/erase)",
                                    topic=topic, partition=partition, offset=offset, key=key, source_headers=headers)
                return
            # idleness is judged on when reports and ticks were *written* (their position in this
            # single-partition stream), never on when a lagging coordinator reads them: a report
            # still queued behind a tick must not let that tick declare its source idle
            now = int(body.get("wall") or now)
            if control == "tick" and "busy" in body:
                self._busy = set(body["busy"])  # measured when the tick was written, like its wall
            if control == "tick" and body.get("unknown"):
                # the backlog could not be read (broker away): nobody could report meanwhile, so
                # that silence is not idleness. Every source starts a new idle period now; else,
                # after an outage longer than idle_ms, the first source back would carry event
                # time past the events the others' producers are still re-sending (timers of
                # absences fired before the awaited events arrived, which then came in late)
                self.sources.refresh(now)
            if control == "watermark":
                for source, wm in body.get("sources", {}).items():
                    self.sources.update(source, wm, now)
                    # persisted beside the graph, so a restarted coordinator knows its sources
                    self._producer.produce(IDENTITY_MAP_TOPIC, key=(WM_PREFIX + source).encode(),
                                           value=f"{wm}:{now}".encode())
            self._advance(now)
            return
        try:
            decoded = decode_record(value, self._registry, self._reader, datums=self._stamper is not None)
        except DecodeError as err:
            self._dead.send(value, err.reason, err.detail, topic=topic, partition=partition, offset=offset,
                            key=key, source_headers=headers)
            return
        now = int(time.time() * 1000)
        datums = decoded.datums
        for index, event in enumerate(decoded.events):
            r = self.graph.resolve(event["event_id"], event["identifiers"], event["occurred_at"])
            if r.changed:
                publish_resolution(self._producer, r, now)
            for m in r.merges:
                if m.status == "merged":
                    self.merges += 1
                    # the winner's partition holds the winner's sessions open until the loser's
                    # partition has handed its state over (transfer), however far time moves
                    self._control(m.winner, AwaitHandover(m.merge_id, m.winner, m.loser, m.occurred_at))
                    self._control(m.loser, MergeAway(m.merge_id, m.winner, m.loser, m.occurred_at))
                else:
                    self.refusals += 1
            stamped = (self._stamper.stamp(datums[index], event, r.customer_id, False, now)
                       if datums is not None and self._stamper is not None else None)
            self._later.append(partial(self._forward, event, r.customer_id, stamped, now))

    def _forward(self, event: dict, customer_id: str, stamped: bytes | None, now: int) -> None:
        key = customer_id.encode()
        if self._stage is not None:
            self._publisher.publish_row(self._stage, key, stage_row(event, customer_id))
        if stamped is not None:  # forwarded as the bytes it came in, stamped
            self._publisher.publish_datum(self._out, key, stamped)
            return
        event = branch_tagged(event)
        event["cem"] = (RESOLUTION, {"customer_id": customer_id, "late": False, "processed_at": now})
        self._publisher.publish(self._out, key, event)

    def _control(self, key: str, msg: ControlMessage) -> None:
        self._later.append(partial(self._send_control, key, msg))

    def _send_control(self, key: str, msg: ControlMessage) -> None:
        # through the batch publisher's partition so it queues behind the loser's forwarded events
        self._publisher.flush_partition(self._ctl, partition_for(key.encode(), self._parts))
        kind, value = encode_control(msg)
        while True:
            try:
                self._producer.produce(self._ctl, key=key.encode(), value=value,
                                       partition=partition_for(key.encode(), self._parts),
                                       headers=[(CONTROL_HEADER, kind.encode())])
                return
            except BufferError:
                self._producer.poll(0.05)

    def _unmerge(self, d: dict, now: int) -> None:
        """Reverse a merge going forward: the identifiers it moved go back to the loser, and the
        decision is recorded (status `unmerged`, same merge id: it replaces the merge)."""
        m = Merge(d["merge_id"], d["winner"], d["loser"], d["event_id"], d["reason"], int(d["occurred_at"] * 1000),
                  tuple(d.get("moved") or ()))
        mappings = self.graph.unmerge(m)
        undone = Merge(m.merge_id, m.winner, m.loser, m.event_id, f"unmerged by an operator: {m.reason}",
                       m.occurred_at, m.moved, "unmerged")
        publish_resolution(self._producer, Resolution(m.loser, tuple(mappings), ((m.loser, m.occurred_at),),
                                                      (undone,)), now)

    def _erase(self, body: dict, now: int) -> bool:
        """Carry out an erasure request; False when the body holds none (the caller dead-letters it)."""
        try:
            request = ErasureRequest.from_json(body["request"])
        except (KeyError, TypeError, ValueError):
            return False
        subject = request.subject
        profile = subject if subject.startswith("cus-") else self.graph.owner.get(subject)
        identifiers = set() if profile is not None else {subject}  # unknown: its rows may remain
        profiles: list[str] = []
        merge_ids: list[str] = []
        known = False
        if profile is not None:
            log_ = self._merge_log()
            profile = surviving_profile(profile, log_)  # named by an id merged away since: the survivor
            known = profile in self.graph.first_seen or bool(self.graph.members.get(profile))
            profiles, merge_ids, moved = erasure_scope(profile, log_)
            identifiers |= moved
            for p in profiles:
                identifiers |= set(self.graph.members.get(p, ()))
                for m in self.graph.erase(p):
                    self._producer.produce(IDENTITY_MAP_TOPIC, key=m.identifier.encode(), value=None)
                self._producer.produce(IDENTITY_MAP_TOPIC, key=(PROFILE_PREFIX + p).encode(), value=None)
            for mid in merge_ids:
                self._producer.produce(IDENTITY_MERGES_TOPIC, key=mid.encode(), value=None)
        # the request's id salts the digests: the same on a replay, different for every erasure
        erasure = Erasure.of(request, profiles, identifiers, request.erasure_id, tuple(merge_ids), now, known)
        self.erasures += 1
        log.info("erasure %s: %d profile(s), %d identifier(s) released", request.erasure_id, len(profiles),
                 len(identifiers))
        for p in profiles[1:]:
            self._control(p, Erase(p))
        key = profiles[0] if profiles else subject
        self._control(key, Erase(key, erasure.to_json()))
        return True

    def _advance(self, now: int) -> None:
        wm = self.sources.combined(now, self._busy)
        if wm is not None:
            self._quiet_since = None
        elif self.sources.seen:
            # every source idle (each quiet for idle_ms): once all have been quiet for quiet_ms,
            # traffic has stopped rather than stalled, and event time follows the wall clock so
            # timers fire at night
            self._quiet_since = now if self._quiet_since is None else self._quiet_since
            if now - self._quiet_since + self._idle >= self._quiet:
                wm = now - self._lateness
                if wm > self.watermark + self._lateness:
                    log.warning("every raw partition quiet for %.0f s: event time jumps %.0f s to the wall clock "
                                "minus the allowed lateness (sources %s)", self._quiet / 1000,
                                (wm - max(self.watermark, 0)) / 1000, self.sources.describe(now))
        if wm is not None and wm > self.watermark:
            self.watermark = wm
            self._pending_wm = wm

    def flush(self) -> None:
        """The graph's changes first, then what was decided with them, then the watermark.

        Every changelog and merge-log record produced so far is acknowledged before the forwards
        and controls decided since the last flush are sent: a crash can then never leave a
        forwarded event whose decision the coordinator that takes over does not find in the
        changelog (it would decide again, maybe otherwise, and the event would land under two
        profile ids). On a delivery failure the caller processes its records again, which
        decides and queues them anew, so what was queued is dropped first. Then the forwarded
        events, then the new watermark behind them on every partition."""
        later, self._later = self._later, []
        self._publisher.wait_acked()
        for send in later:
            send()
        self._publisher.flush()
        if self._pending_wm is not None:
            body = to_json(Watermark(self._pending_wm))
            for p in range(self._parts):
                self._publisher.send_control(self._ctl, p, body)
            self._publisher.flush()
            self._pending_wm = None


class SourceWatermarks:
    """Watermarks of the raw partitions (sources), combined Flink-style: the minimum over the
    sources that are not idle. A source is idle when it reported nothing for `idle_ms` of wall
    time (a quiet raw partition must not hold event time back); None when all are idle."""

    def __init__(self, idle_ms: int):
        self._idle = idle_ms
        self._marks: dict[str, tuple[int, int]] = {}
        self.restored = False

    @property
    def seen(self) -> bool:
        return self.restored or any(wm > -(1 << 62) for wm, _ in self._marks.values())

    def update(self, source: str, wm: int, wall: int) -> None:
        old = self._marks.get(source)
        self._marks[source] = (max(wm, old[0]) if old else wm, max(wall, old[1]) if old else wall)

    def refresh(self, wall: int) -> None:
        """Every known source counts as heard from at `wall` (its watermark unchanged)."""
        for source, (wm, old) in self._marks.items():
            self._marks[source] = (wm, max(wall, old))

    def describe(self, now: int) -> str:
        return ", ".join(f"{src} wm={wm} quiet={(now - wall) / 1000:.1f}s"
                         for src, (wm, wall) in sorted(self._marks.items()))

    def combined(self, now: int, busy: AbstractSet[str] = frozenset()) -> int | None:
        """`busy` sources still have unread input in Kafka: quiet reports do not make them idle
        (they are only waiting for the consumer), so they keep holding event time back."""
        active = [wm for src, (wm, wall) in self._marks.items() if now - wall < self._idle or src in busy]
        return min(active) if active else None
