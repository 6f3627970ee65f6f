"""The identity graph's Kafka side: its compacted changelog (cem.identity.map), the merge log
(cem.identity.merges) and the replica every worker keeps for the fast path.

Changelog records: key `kind:value` → value profile id (tombstone = released); key `~p:<profile>`
→ first-seen event time in ms (tombstone = profile merged away). Replaying all of them in offset
order rebuilds the coordinator's graph exactly (`IdentityGraph.apply`/`apply_profile`).
Merge records are JSON, keyed by merge id, one per decision (merged, refused or unmerged).
"""
from __future__ import annotations

import json
import logging
import threading
from typing import TypeVar

from confluent_kafka import Consumer, Producer, TopicPartition

from cem import metrics
from cem.kafka.publisher import produce_waiting
from cem.retry import Backoff
from cem.kafka.topic_reader import read_to_end
from cem.identity import IdentityGraph, LookupGraph, Merge, Resolution
from cem.settings import IDENTITY_MAP_TOPIC, IDENTITY_MERGES_TOPIC
from cem.kafka.connection import KafkaConnection
from .spillmap import SpillMap

log = logging.getLogger(__name__)
REPLICA_BACKOFF = Backoff(first=2.0, cap=30.0)
G = TypeVar("G", bound=IdentityGraph)
PROFILE_PREFIX = "~p:"
WM_PREFIX = "~wm:"  # source watermark: value "<wm>:<wall ms>" (the coordinator's, not the graph's)


def bounded_graph(cls: type[G], max_live: int, shared: frozenset[str] = frozenset()) -> G:
    """A graph whose maps keep at most `max_live` entries each as Python objects and spill the
    rest to scratch SQLite (`SpillMap`); `max_live` 0 = plain dicts, unbounded."""
    if max_live <= 0:
        return cls(shared=shared)
    return cls(shared=shared, owner=SpillMap(max_live),
               members=SpillMap(max_live, lambda s: json.dumps(sorted(s)), lambda b: set(json.loads(b))),
               first_seen=SpillMap(max_live))


def merge_json(m: Merge, decided_at: int) -> bytes:
    return json.dumps({"merge_id": m.merge_id, "winner": m.winner, "loser": m.loser, "event_id": m.event_id,
                       "reason": m.reason, "status": m.status, "moved": list(m.moved),
                       "occurred_at": m.occurred_at / 1000, "decided_at": decided_at / 1000},
                      separators=(",", ":")).encode()


def publish_resolution(producer: Producer, r: Resolution, decided_at: int) -> None:
    """Append a resolution's changes to the changelog and merge log (delivery awaited by the
    caller's flush, before it acks its input)."""
    for profile, first_seen in r.created:
        _produce(producer, IDENTITY_MAP_TOPIC, (PROFILE_PREFIX + profile).encode(), str(first_seen).encode())
    for mapping in r.mappings:
        _produce(producer, IDENTITY_MAP_TOPIC, mapping.identifier.encode(),
                 mapping.profile.encode() if mapping.profile is not None else None)
    for m in r.merges:
        if m.status == "merged":
            _produce(producer, IDENTITY_MAP_TOPIC, (PROFILE_PREFIX + m.loser).encode(), None)
        _produce(producer, IDENTITY_MERGES_TOPIC, m.merge_id.encode(), merge_json(m, decided_at))


def _produce(producer: Producer, topic: str, key: bytes, value: bytes | None) -> None:
    produce_waiting(producer, topic, key=key, value=value)


def _apply(graph: IdentityGraph, key: bytes, value: bytes | None) -> None:
    k = key.decode()
    if k.startswith(WM_PREFIX):
        if value is not None:
            wm, wall = value.decode().split(":")
            graph.__dict__.setdefault("source_marks", {})[k[len(WM_PREFIX):]] = (int(wm), int(wall))
        return
    if k.startswith(PROFILE_PREFIX):
        graph.apply_profile(k[len(PROFILE_PREFIX):], int(value) if value is not None else None)
    else:
        graph.apply(k, value.decode() if value is not None else None)


def _consumer(kafka: KafkaConnection) -> Consumer:
    """Follows every partition of the changelog from its beginning (the Replica's reader)."""
    c = Consumer(kafka.client_config(**{"group.id": "cem-identity-replica",
                                        "enable.auto.commit": False, "enable.partition.eof": False}))
    parts = c.list_topics(IDENTITY_MAP_TOPIC, timeout=30).topics[IDENTITY_MAP_TOPIC].partitions
    c.assign([TopicPartition(IDENTITY_MAP_TOPIC, p, 0) for p in parts])
    return c


def load_graph(kafka: KafkaConnection, graph: IdentityGraph, timeout: float = 300.0) -> int:
    """Replay the changelog up to its current end into `graph`; returns records applied.
    The coordinator calls this before deciding anything."""
    n = 0
    for m in read_to_end(kafka, IDENTITY_MAP_TOPIC, timeout=timeout):
        _apply(graph, m.key(), m.value())
        n += 1
    return n


class Replica(threading.Thread):
    """Follows the changelog forever and keeps `graph.owner` current for lookups. Lookups are
    only a fast path: a stale or half-applied merge makes `lookup` disagree and the event goes
    to the coordinator, which is always right."""

    def __init__(self, kafka: KafkaConnection, max_live: int = 0):
        super().__init__(name="identity-replica", daemon=True)
        self.graph: IdentityGraph = bounded_graph(LookupGraph, max_live)
        self._kafka = kafka
        self._halt = threading.Event()
        self.applied = 0

    def run(self) -> None:
        """Follow the changelog until `stop`. When the broker goes away the replica reconnects,
        for as long as it takes (capped backoff, each round counted in
        cem_identity_replica_restarts_total and logged): it is only a fast path, and meanwhile
        every lookup misses and goes to the coordinator, so the worker stays correct."""
        attempt = 0
        while not self._halt.is_set():
            try:
                c = _consumer(self._kafka)
                attempt = 0
                try:
                    while not self._halt.is_set():
                        for m in c.consume(5000, 0.2):
                            key = m.key()  # (every changelog record has one; its type allows none)
                            if m.error() is None and isinstance(key, bytes):
                                _apply(self.graph, key, m.value())
                                self.applied += 1
                finally:
                    c.close()
            except Exception as err:  # noqa: BLE001 - broker away: retry, lookups just miss meanwhile
                attempt += 1
                delay = REPLICA_BACKOFF.delay(attempt)
                metrics.REPLICA_RESTARTS.inc()
                log.warning("identity replica lost the changelog (attempt %d), reconnecting in %.0f s: %s",
                            attempt, delay, err)
                self._halt.wait(delay)

    def stop(self) -> None:
        self._halt.set()


def find_merge(kafka: KafkaConnection, merge_id: str, timeout: float = 30.0) -> dict | None:
    """The latest record of `merge_id` in cem.identity.merges (None if absent)."""
    found = None
    for m in read_to_end(kafka, IDENTITY_MERGES_TOPIC, timeout=timeout):
        if m.key() == merge_id.encode():
            found = json.loads(m.value())
    return found


def request_unmerge(kafka: KafkaConnection, merge: dict) -> None:
    """Ask the coordinator (through its own input, so it stays the single writer) to undo a merge."""
    from cem.settings import IDENTITY_LINKS_TOPIC
    p = Producer(kafka.client_config(**{"enable.idempotence": True}))
    p.produce(IDENTITY_LINKS_TOPIC, value=json.dumps({"control": "unmerge", "merge": merge}).encode(),
              partition=0, headers=[("cem-control", b"unmerge")])
    if p.flush(30):
        raise RuntimeError("the unmerge request was not acknowledged by Kafka")


def merge_log(kafka: KafkaConnection, timeout: float = 120.0) -> dict[str, dict]:
    """Every merge id's latest decision in cem.identity.merges (tombstoned ones left out): what
    an erasure reads to find the profiles merged into the one it removes."""
    latest: dict[str, dict] = {}
    for m in read_to_end(kafka, IDENTITY_MERGES_TOPIC, timeout=timeout):
        key = (m.key() or b"").decode()
        if m.value() is None:
            latest.pop(key, None)
        else:
            latest[key] = json.loads(m.value())
    return latest

