"""Event time across raw partitions (the coordinator's watermark): Flink-style minimum over the
sources that are not idle, where idleness is judged on one picture as of each tick's write time."""
from __future__ import annotations

import json

from cem.identity import IdentityGraph
from cem.schemas.registry import default_registry
from cem.streams.coordinator import CONTROL_HEADER, Coordinator, SourceWatermarks


class Recorder:
    """Stands in for the Kafka producer and batch publisher: control records only, no events."""

    def __init__(self) -> None:
        self.controls: list[tuple[str, int, dict]] = []

    def produce(self, *args, **kwargs) -> None:
        pass

    def send_control(self, topic: str, partition: int, body: dict) -> None:
        self.controls.append((topic, partition, body))

    def flush(self) -> None:
        pass

    def wait_acked(self) -> None:
        pass


def coordinator(sources=("web:0", "phone:0")) -> Coordinator:
    rec = Recorder()
    return Coordinator(IdentityGraph(), default_registry(), rec, rec, None, "out", 2, lateness_ms=600_000,
                       idle_ms=5_000, clock=lambda: 0.0, expected_sources=list(sources))


def control(c: Coordinator, kind: str, **body) -> None:
    c.process(json.dumps({"control": kind, **body}).encode(), "links", 0, 0, [(CONTROL_HEADER, kind.encode())])


def test_minimum_over_active_sources():
    w = SourceWatermarks(idle_ms=5_000)
    w.update("a", 100, 1_000)
    w.update("b", 50, 1_000)
    assert w.combined(2_000) == 50
    w.update("a", 200, 7_000)
    assert w.combined(7_000) == 200  # b quiet for 6 s: idle, no longer holds event time
    assert w.combined(7_000, busy={"b"}) == 50  # unread input: waiting for the consumer, not idle
    assert w.combined(20_000) is None  # everything quiet


def test_a_source_is_busy_until_a_tick_says_otherwise():
    c = coordinator()
    control(c, "watermark", sources={"web:0": 100, "phone:0": 50}, wall=1_000)
    control(c, "watermark", sources={"web:0": 900}, wall=9_000)
    assert c.watermark == 50  # phone quiet for 8 s, but no tick has said it has nothing to read


def test_idleness_uses_the_backlog_as_of_the_tick_write_time():
    c = coordinator()
    control(c, "watermark", sources={"web:0": 100, "phone:0": 50}, wall=1_000)
    control(c, "tick", wall=7_000, busy=["phone:0"])  # phone was behind when this tick was written
    control(c, "watermark", sources={"web:0": 900}, wall=8_000)
    assert c.watermark == 50
    control(c, "tick", wall=9_000, busy=[])  # quiet and nothing unread: idle
    assert c.watermark == 900
    c.flush()
    assert c._publisher.controls[-1][2] == {"control": "watermark", "v": 1, "wm": 900}


def test_every_source_idle_follows_the_wall_clock_minus_lateness():
    c = coordinator()
    control(c, "watermark", sources={"web:0": 100, "phone:0": 50}, wall=1_000)
    control(c, "tick", wall=700_000, busy=[])
    assert c.watermark == 700_000 - 600_000


def test_a_stall_shorter_than_all_quiet_does_not_move_event_time_to_the_wall_clock():
    rec = Recorder()
    c = Coordinator(IdentityGraph(), default_registry(), rec, rec, None, "out", 2, lateness_ms=600_000,
                    idle_ms=5_000, quiet_ms=45_000, clock=lambda: 0.0, expected_sources=["web:0"])
    control(c, "watermark", sources={"web:0": 100}, wall=1_000)
    control(c, "tick", wall=30_000, busy=[])  # a 29 s broker outage while replaying old data
    assert c.watermark == 100
    control(c, "watermark", sources={"web:0": 200}, wall=31_000)  # traffic is back
    control(c, "tick", wall=40_000, busy=[])
    assert c.watermark == 200
    control(c, "tick", wall=90_000, busy=[])  # quiet for 59 s: traffic has stopped
    assert c.watermark == 200  # the wall clock minus the lateness is still behind the data
    control(c, "tick", wall=700_000, busy=[])
    assert c.watermark == 700_000 - 600_000


def test_an_outage_longer_than_idle_ms_does_not_make_the_sources_idle():
    """Found by `cem chaos` on a loaded machine: the broker away for ~45 s (10 s down, the rest
    its restart) with idle_ms 40 s. The first source back carried event time past the events the
    other sources' producers were still re-sending, so checkout_abandoned timers fired before the
    orders they awaited arrived (31 moments not in the ground truth)."""
    c = coordinator()
    control(c, "watermark", sources={"web:0": 100, "phone:0": 50}, wall=1_000)
    for wall in range(3_000, 21_000, 2_000):  # the broker is away: every backlog check fails
        control(c, "tick", wall=wall, busy=["web:0", "phone:0"], unknown=True)
    assert c.watermark == 50
    control(c, "tick", wall=21_000, busy=[])  # back; phone's events are not re-sent yet
    control(c, "watermark", sources={"web:0": 900}, wall=21_500)  # web's are
    assert c.watermark == 50  # phone had no chance to report: silent only 2 s since the outage
    control(c, "watermark", sources={"phone:0": 60}, wall=23_000)
    assert c.watermark == 60
    control(c, "watermark", sources={"web:0": 950}, wall=29_000)
    control(c, "tick", wall=29_500, busy=[])
    assert c.watermark == 950  # phone quiet for idle_ms after the outage, nothing unread: idle now
