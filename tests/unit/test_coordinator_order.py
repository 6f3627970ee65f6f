"""The coordinator forwards nothing it decided before the decision is durable: every changelog
record produced so far is acknowledged (the publisher's `wait_acked`) before the forwards and
merge controls queued since the last flush reach the publisher. Otherwise a crash could leave a
forwarded event whose decision the coordinator that takes over never saw; it would decide
again, maybe otherwise, and the event would land under two profile ids."""
from __future__ import annotations

import pytest

from cem.identity import IdentityGraph
from cem.kafka.publisher import DeliveryFailed
from cem.schemas.registry import default_registry
from cem.schemas.serde import encode_batch
from cem.sim.generator import touchpoints
from cem.streams.coordinator import Coordinator


class CallLog:
    """Producer and publisher in one: records the order of what the coordinator asks of them."""

    def __init__(self, fail_acks: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_acks = fail_acks

    def produce(self, topic: str, *args: object, **kwargs: object) -> None:
        self.calls.append(f"produce:{topic}")

    def wait_acked(self, timeout: float = 30.0) -> None:
        self.calls.append("wait_acked")
        if self.fail_acks:
            raise DeliveryFailed("broker away")

    def publish_row(self, topic: str, *args: object) -> None:
        self.calls.append(f"forward:{topic}")

    def publish_datum(self, topic: str, *args: object) -> None:
        self.calls.append(f"forward:{topic}")

    def publish(self, topic: str, *args: object) -> None:
        self.calls.append(f"forward:{topic}")

    def flush_partition(self, topic: str, partition: int) -> None:
        pass

    def send_control(self, topic: str, partition: int, body: object) -> None:
        self.calls.append(f"control:{topic}")

    def flush(self) -> None:
        self.calls.append("flush")


def _record() -> bytes:
    registry = default_registry()
    events = list(touchpoints(40, customers=5, seed=3, start_ms=1_700_000_000_000))
    return encode_batch(events, registry.latest("touchpoint").parsed)


def _coordinator(log: CallLog) -> Coordinator:
    return Coordinator(IdentityGraph(), default_registry(), log, log, None, "cem.touchpoints", 4,  # type: ignore[arg-type]
                       clock=lambda: 0.0, stage_topic="cem.stage")


def test_forwards_wait_for_the_changelog_acks():
    log = CallLog()
    c = _coordinator(log)
    c.process(_record(), "cem.identity.links", 0, 0)
    assert log.calls and not [x for x in log.calls if x.startswith("forward")]  # decisions only
    c.flush()
    first_forward = next(i for i, x in enumerate(log.calls) if x.startswith("forward"))
    assert "wait_acked" in log.calls[:first_forward]
    assert all(x.startswith("produce") for x in log.calls[:log.calls.index("wait_acked")])


def test_a_failed_ack_drops_what_was_queued_so_the_replay_queues_it_once():
    log = CallLog(fail_acks=True)
    c = _coordinator(log)
    c.process(_record(), "cem.identity.links", 0, 0)
    with pytest.raises(DeliveryFailed):
        c.flush()
    log.fail_acks = False
    log.calls.clear()
    c.process(_record(), "cem.identity.links", 0, 0)  # the caller processes the record again
    c.flush()
    forwards = [x for x in log.calls if x.startswith("forward")]
    assert len(forwards) == 2 * 40  # each event once to cem.stage and once to cem.touchpoints
