"""Control records of the customer stage (streams/control.py): typed messages whose encoding
round-trips exactly, records written before the version field still read, and a record that
does not decode dead-lettered with its reason while the stage carries on."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from cem.rules import load_routes, load_rules
from cem.schemas.registry import default_registry
from cem.sessions import Touch
from cem.streams.control import (CONTROL_HEADER, VERSION, AlertAction, AwaitHandover, ControlError, Forward, Handover,
                                 MergeAway, Watermark, decode, encode)
from cem.streams.customers import CustomerStage, decode_state, encode_state
from cem.streams.state import KeyedState
from cem.timeline import Timeline
from tests.support.recording import Rows

_id = st.text(min_size=1, max_size=12)
_ms = st.integers(-(1 << 62), 1 << 62)
_plain = st.one_of(
    st.builds(Watermark, _ms),
    st.builds(AwaitHandover, _id, _id, _id, _ms),
    st.builds(MergeAway, _id, _id, _id, _ms),
    st.builds(AlertAction, _id, _id, st.sampled_from(["ack", "resolve"]), _id, st.none() | st.text(max_size=20),
              _ms))


@given(_plain)
def test_a_message_decodes_to_itself(m):
    kind, value = encode(m)
    assert kind == m.KIND and json.loads(value)["v"] == VERSION
    assert decode(kind, value) == m


def _timeline(customer: str, n: int) -> Timeline:
    tl = Timeline(customer)
    for i in range(n):
        tl.add(Touch(1_000_000 + i * 1000, f"e{i}", "click", "web", "s1", None, {"element": "buy"}), 0)
    return tl


@given(_id, _id, st.integers(0, 4), st.booleans())
def test_a_handover_or_forward_carries_its_timeline_exactly(winner, loser, n, forward):
    tl = _timeline(loser, n)
    m = Forward(winner, tl) if forward else Handover(winner, loser, tl if n else None)
    kind, value = encode(m)
    back = decode(kind, value)
    assert type(back) is type(m) and back.winner == winner
    assert encode(back) == (kind, value)
    if not forward:
        assert back.loser == loser and (back.timeline is None) == (n == 0)


def test_records_written_before_the_version_field_still_read():
    old = {"watermark": {"control": "watermark", "wm": 5},
           "await": {"control": "await", "merge_id": "m", "winner": "w", "loser": "l", "at": 3},
           "merge": {"control": "merge", "merge_id": "m", "winner": "w", "loser": "l", "at": 3},
           "alert": {"control": "alert", "customer": "c", "alert_id": "a1", "action": "ack", "by": None,
                     "note": None, "at": 9}}
    got = {k: decode(k, json.dumps(b).encode()) for k, b in old.items()}
    assert got == {"watermark": Watermark(5), "await": AwaitHandover("m", "w", "l", 3),
                   "merge": MergeAway("m", "w", "l", 3), "alert": AlertAction("c", "a1", "ack", "unknown", None, 9)}
    forward = decode("transfer", json.dumps({"control": "transfer", "winner": "w", "loser": "",
                                             "timeline": _timeline("l", 2).to_json()}).encode())
    assert isinstance(forward, Forward) and len(forward.timeline.subjects["web|s1"].touches) == 2
    handover = decode("transfer", json.dumps({"control": "transfer", "winner": "w", "loser": "l",
                                              "timeline": None}).encode())
    assert handover == Handover("w", "l", None)


@pytest.mark.parametrize("kind, value, reason", [
    ("rewind", b'{"control": "rewind"}', "unknown_control"),
    ("watermark", b"not json", "bad_control"),
    ("watermark", b"[1, 2]", "bad_control"),
    ("watermark", b'{"control": "watermark"}', "bad_control"),
    ("watermark", b'{"control": "watermark", "wm": "soon"}', "bad_control"),
    ("watermark", b'{"control": "watermark", "v": 2, "wm": 5}', "unknown_control_version"),
    ("merge", b'{"control": "merge", "merge_id": "m", "winner": "", "loser": "l", "at": 1}', "bad_control"),
    ("alert", b'{"control": "alert", "customer": "c", "alert_id": "a", "action": "delete", "at": 1}', "bad_control"),
    ("transfer", b'{"control": "transfer", "winner": "w", "loser": "", "timeline": null}', "bad_control"),
    ("transfer", b'{"control": "transfer", "winner": "w", "loser": "l", "timeline": {"c": "l"}}', "bad_control"),
])
def test_a_record_that_does_not_decode_raises_a_typed_error(kind, value, reason):
    with pytest.raises(ControlError) as err:
        decode(kind, value)
    assert err.value.reason == reason and err.value.detail


class DeadLetters:
    """What the stage hands cem.kafka.dlq.DeadLetters, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str, partition: int, offset: int,
             key: bytes | None = None, source_headers: list | None = None) -> None:
        self.sent.append((value, reason, detail, topic, partition, offset, key))


def test_the_stage_dead_letters_a_bad_control_record_and_carries_on():
    dead = DeadLetters()
    stage = CustomerStage(KeyedState(encode_state, decode_state), default_registry(), Rows(), lambda k, m: None,
                          rules=load_rules(None), routes=load_routes(None), dead=dead)
    stage.process(b'{"control": "rewind"}', "cem.touchpoints", 1, 41, [(CONTROL_HEADER, b"rewind")], b"cus-1")
    stage.process(b"{", "cem.touchpoints", 1, 42, [(CONTROL_HEADER, b"watermark")])
    assert [(d[0], d[1], d[3], d[4], d[5]) for d in dead.sent] == [
        (b'{"control": "rewind"}', "unknown_control", "cem.touchpoints", 1, 41),
        (b"{", "bad_control", "cem.touchpoints", 1, 42)]
    assert all(d[2] for d in dead.sent)  # a detail for a person
    assert [d[6] for d in dead.sent] == [b"cus-1", None]  # the source key, for a replay
    assert stage.bad_controls == 2
    kind, value = encode(Watermark(1234))
    stage.process(value, "cem.touchpoints", 1, 43, [(CONTROL_HEADER, kind.encode())])
    assert stage.gauges()[1][0] == 1234  # the next record is handled as usual


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        Watermark(1).wm = 2  # type: ignore[misc]
