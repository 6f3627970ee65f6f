"""A dead letter names the key of the record it came from, whatever came before it in the
record: an invalid event after valid ones in one container keeps the source record's key (the
per-event output key once overwrote it, so `cem dlq replay` would have re-keyed the event)."""
from __future__ import annotations

import time

from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch
from cem.sim.generator import touchpoints
from cem.streams.ingest import Ingest


class Out:
    """Publisher and dead-letter producer in one: records what ingest hands them."""

    def __init__(self) -> None:
        self.dead: list[tuple[str, object]] = []

    def publish(self, topic: str, key: bytes, event: dict) -> None:
        pass

    def publish_row(self, topic: str, key: bytes, row: object) -> None:
        pass

    def send(self, value: bytes | None, reason: str, detail: str, **kw: object) -> None:
        self.dead.append((reason, kw["key"]))


def test_an_invalid_event_after_valid_ones_is_dead_lettered_with_the_records_key():
    registry = default_registry()
    now = int(time.time() * 1000)
    events = list(touchpoints(3, customers=3, seed=1, start_ms=now - 60_000, spread_ms=1_000))
    events[2]["event_type"] = "no_such_type"
    record = encode_batch(events, registry.latest("touchpoint").parsed)
    out = Out()
    ingest = Ingest(registry, out, out, "cem.touchpoints", horizon_ms=400 * 86_400_000,  # type: ignore[arg-type]
                    stage_topic="cem.stage")
    ingest.process(record, "cem.raw.web", 0, 7, [], b"source-key")
    assert out.dead == [("unknown_event_type", b"source-key")]
