"""Control records of the customer stage: typed, frozen messages and their wire format.

A control record travels in cem.touchpoints beside the events, keyed by the customer it concerns
(so it reaches that customer's partition, in order behind the events sent before it), with the
header `cem-control: <kind>` and a JSON body `{"control": kind, "v": version, ...fields}`:

- `watermark` (`Watermark`): event time for the partition, from the coordinator;
- `await` (`AwaitHandover`): the winner of a merge holds its state open until the loser's arrives;
- `merge` (`MergeAway`): the loser hands its timeline over and forwards what comes later;
- `transfer` (`Handover` with a loser, `Forward` without one): a loser's timeline, or touches a
  stale replica resolved to a merged-away customer, for the winner to absorb;
- `alert` (`AlertAction`): a person acknowledged or resolved an alert (`cem alerts ack|resolve`);
- `erase` (`Erase`): a customer's erasure (cem.privacy); the record to the profile itself carries
  the coordinator's `Erasure` (as JSON) for landing.

`encode` and `decode` are exact inverses (`decode(*encode(m)) == m`). Records written before
the version field are version 1 (the same fields). `decode` raises `ControlError` with a stable
`reason` for an unknown kind or version and for a malformed body; the stage dead-letters such a
record and carries on — a control record never stops a worker.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Union

from cem.alerts import ACTIONS
from cem.timeline import Timeline

CONTROL_HEADER = "cem-control"
VERSION = 1


class ControlError(ValueError):
    """A control record this worker cannot act on; `reason` is a stable code for the DLQ."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Watermark:
    KIND: ClassVar[str] = "watermark"
    wm: int  # event time (ms) the partition's input has reached, less the allowed lateness


@dataclass(frozen=True, slots=True)
class AwaitHandover:
    """To the winner's partition: hold its sessions open until `loser`'s state arrives."""
    KIND: ClassVar[str] = "await"
    merge_id: str
    winner: str
    loser: str
    at: int


@dataclass(frozen=True, slots=True)
class MergeAway:
    """To the loser's partition: hand the timeline to `winner`, forward later touches there."""
    KIND: ClassVar[str] = "merge"
    merge_id: str
    winner: str
    loser: str
    at: int


@dataclass(frozen=True, slots=True)
class Handover:
    """The loser's timeline (None when it held nothing) for the winner; ends the winner's wait."""
    KIND: ClassVar[str] = "transfer"
    winner: str
    loser: str
    timeline: Timeline | None


@dataclass(frozen=True, slots=True)
class Forward:
    """Touches resolved to a merged-away customer by a stale replica, for the winner."""
    KIND: ClassVar[str] = "transfer"  # a transfer without a loser, as it always was on the wire
    winner: str
    timeline: Timeline


@dataclass(frozen=True, slots=True)
class AlertAction:
    KIND: ClassVar[str] = "alert"
    customer: str
    alert_id: str
    action: str  # a key of cem.alerts.ACTIONS
    by: str
    note: str | None
    at: int


@dataclass(frozen=True, slots=True)
class Erase:
    KIND: ClassVar[str] = "erase"
    customer: str
    erasure: dict[str, Any] | None = None  # cem.privacy.Erasure.to_json(), on the profile's own record


ControlMessage = Union[Watermark, AwaitHandover, MergeAway, Handover, Forward, AlertAction, Erase]


def to_json(m: ControlMessage) -> dict[str, Any]:
    """The body as a JSON object (what `encode` writes)."""
    body: dict[str, Any] = {"control": m.KIND, "v": VERSION}
    if isinstance(m, Watermark):
        body["wm"] = m.wm
    elif isinstance(m, (AwaitHandover, MergeAway)):
        body.update(merge_id=m.merge_id, winner=m.winner, loser=m.loser, at=m.at)
    elif isinstance(m, Handover):
        body.update(winner=m.winner, loser=m.loser, timeline=m.timeline.to_json() if m.timeline is not None else None)
    elif isinstance(m, Forward):
        body.update(winner=m.winner, loser="", timeline=m.timeline.to_json())
    elif isinstance(m, Erase):
        body.update(customer=m.customer, erasure=m.erasure)
    else:
        body.update(customer=m.customer, alert_id=m.alert_id, action=m.action, by=m.by, note=m.note, at=m.at)
    return body


def encode(m: ControlMessage) -> tuple[str, bytes]:
    """(header value, record value)."""
    return m.KIND, json.dumps(to_json(m), separators=(",", ":")).encode()


def decode(kind: str, value: bytes | None) -> ControlMessage:
    """The message of a record with header `cem-control: kind`; raises ControlError."""
    parse = _DECODERS.get(kind)
    if parse is None:
        raise ControlError("unknown_control", f"control kind {kind!r} is not one of {sorted(_DECODERS)}; "
                                              "was it written by a newer version of cem?")
    try:
        body = json.loads(value or b"{}")
    except ValueError as err:
        raise ControlError("bad_control", f"{kind} control is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise ControlError("bad_control", f"{kind} control is not a JSON object")
    version = body.get("v", 1)  # records written before the field are version 1
    if version != VERSION:
        raise ControlError("unknown_control_version", f"{kind} control version {version!r}; this worker reads "
                                                      f"{VERSION}: was it written by a newer version of cem?")
    try:
        return parse(body)
    except ControlError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ControlError("bad_control", f"{kind} control: {type(err).__name__} {err}") from err


def _str(body: dict[str, Any], name: str) -> str:
    v = body[name]
    if not isinstance(v, str) or not v:
        raise ControlError("bad_control", f"{body.get('control')} control: {name} must be a non-empty string")
    return v


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    v = body[name] if default is None else (body.get(name) or default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ControlError("bad_control", f"{body.get('control')} control: {name} must be a number")
    return int(v)


def _timeline(d: Any) -> Timeline | None:
    return None if not d else Timeline.from_json(d)


def _transfer(body: dict[str, Any]) -> Handover | Forward:
    if body.get("loser"):
        return Handover(_str(body, "winner"), _str(body, "loser"), _timeline(body.get("timeline")))
    tl = _timeline(body.get("timeline"))
    if tl is None:
        raise ControlError("bad_control", "transfer control without a loser carries no timeline")
    return Forward(_str(body, "winner"), tl)


def _alert(body: dict[str, Any]) -> AlertAction:
    action = body.get("action")
    if action not in ACTIONS:
        raise ControlError("bad_control", f"alert control: action {action!r} is not one of {sorted(ACTIONS)}")
    note = body.get("note")
    return AlertAction(_str(body, "customer"), str(_str(body, "alert_id")), action,
                       str(body.get("by") or "unknown"), None if note is None else str(note), _int(body, "at", 0))


_DECODERS: dict[str, Callable[[dict[str, Any]], ControlMessage]] = {
    "watermark": lambda b: Watermark(_int(b, "wm")),
    "await": lambda b: AwaitHandover(_str(b, "merge_id"), _str(b, "winner"), _str(b, "loser"), _int(b, "at")),
    "merge": lambda b: MergeAway(_str(b, "merge_id"), _str(b, "winner"), _str(b, "loser"), _int(b, "at")),
    "transfer": _transfer,
    "alert": _alert,
    "erase": lambda b: Erase(_str(b, "customer"), b["erasure"] if isinstance(b.get("erasure"), dict) else None),
}
