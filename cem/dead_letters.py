"""Dead letters as `cem dlq` sees them: parsed from cem.dlq's headers, selected, summarized,
shown safely, and planned for replay. Pure: the Kafka side is kafka/dlq_replay.py.

Replay contract (what `plan_replay` decides, record by record, in cem.dlq order):
* a dead letter is re-published at most once: the ledger (cem.dlq.replays) holds every dead
  letter already replayed, by its cem.dlq position and by (source position, value digest), so
  the same bad record dead-lettered twice (a redelivery after a crash) is re-published once too;
* it goes to its source topic and partition (cem-source-topic/-partition) with the source
  record's key (cem-source-key; a null value: the record had no key, and gets none). A dead
  letter without that header (written before it existed, or by a stage that does not know the
  key) gets the key the publisher would have used when `derive_key` can tell it (a single event
  on a raw topic: its routing key), and otherwise none — cem's own batch records carry none, and
  the partition is the original one either way, so ingest sees the record exactly where it was;
* dead letters that have no source topic to go back to are skipped with the reason: collector
  and import rejections (`http:…`, `file:…`: send them again from their source), webhook
  deliveries (`cem notify` retries those), empty records, topics that no longer exist.
Replay never judges whether a record is acceptable now: the pipeline does, and what still fails
comes back to cem.dlq with its reason and a cem-replay-of header.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, Sequence

SOURCE_KEY = "cem-source-key"
REPLAY_OF = "cem-replay-of"
#: Stages whose dead letters are not records of a topic the pipeline reads again.
NOT_REPLAYED_STAGES = {"notify": "a webhook delivery: `cem notify` retries parked deliveries itself"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_partition: int
    dlq_offset: int
    reason: str
    detail: str
    stage: str
    source_topic: str
    source_partition: int
    source_offset: int
    batch_index: int
    failed_at: int | None  # epoch ms
    source_key: bytes | None
    key_known: bool        # cem-source-key present (with a null value: the source had no key)
    replay_of: str | None
    value: bytes | None = field(repr=False)

    @property
    def id(self) -> str:
        """Its position in cem.dlq (the ledger key)."""
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def source(self) -> str:
        """Where it was read: topic:partition:offset, and #index for one event of a batch."""
        at = f"{self.source_topic}:{self.source_partition}:{self.source_offset}"
        return at if self.batch_index < 0 else f"{at}#{self.batch_index}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.value or b"").hexdigest()[:32]


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def parse(headers: Sequence[tuple[str, bytes | None]] | None, value: bytes | None,
          partition: int, offset: int) -> DeadLetter:
    """A cem.dlq record as a DeadLetter; missing or garbled headers become '?' / -1 / None (a
    record some other producer wrote is shown, never crashes the tool)."""
    given = dict(headers or [])
    text = {k: (v or b"").decode("utf-8", "replace") for k, v in given.items()}
    failed = _int(text.get("cem-failed-at"), -1)
    return DeadLetter(
        dlq_partition=partition, dlq_offset=offset,
        reason=text.get("cem-reason") or "?", detail=text.get("cem-detail", ""),
        stage=text.get("cem-stage") or "?", source_topic=text.get("cem-source-topic") or "?",
        source_partition=_int(text.get("cem-source-partition"), -1),
        source_offset=_int(text.get("cem-source-offset"), -1),
        batch_index=_int(text.get("cem-batch-index"), -1),
        failed_at=failed if failed >= 0 else None,
        source_key=given.get(SOURCE_KEY), key_known=SOURCE_KEY in given, replay_of=text.get(REPLAY_OF),
        value=value)


# -- selection -----------------------------------------------------------------------------------

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_since(text: str, now_ms: int) -> int:
    """`--since`: a duration back from now (`90s`, `30m`, `2h`, `7d`, `1w`) or a date/time in
    ISO 8601 (`2026-12-04`, `2026-12-04T10:30`, with `Z` or an offset; without one it is UTC).
    Returns epoch ms; raises ValueError saying what is accepted."""
    m = _AGO.match(text)
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration back from now (90s, 30m, 2h, 7d, 1w) "
                         "or an ISO date/time (2026-12-04, 2026-12-04T10:30Z)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command works on. `reason` matches the code exactly or, without a
    `:`, its family (`missing_field` matches `missing_field:event_id`)."""
    reason: str | None = None
    since_ms: int | None = None
    stage: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.reason != self.reason \
                and not (":" not in self.reason and letter.reason.startswith(self.reason + ":")):
            return False
        if self.since_ms is not None and (letter.failed_at is None or letter.failed_at < self.since_ms):
            return False
        return self.stage is None or letter.stage == self.stage


def select(letters: Iterable[DeadLetter], selection: Selection) -> list[DeadLetter]:
    return [d for d in letters if selection.matches(d)]


# -- summary and display -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    by_reason: tuple[tuple[str, int], ...]                  # most frequent first
    by_origin: tuple[tuple[str, str, str, int], ...]        # (reason, stage, source topic, n)
    oldest: int | None
    newest: int | None
    replays_failed_again: int                               # dead letters of replayed records


def summarize(letters: Sequence[DeadLetter]) -> Summary:
    reasons = Counter(d.reason for d in letters)
    origins = Counter((d.reason, d.stage, d.source_topic) for d in letters)
    times = [d.failed_at for d in letters if d.failed_at is not None]
    return Summary(len(letters),
                   tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                   tuple((r, s, t, n) for (r, s, t), n in sorted(origins.items(), key=lambda kv: (-kv[1], kv[0]))),
                   min(times, default=None), max(times, default=None),
                   sum(1 for d in letters if d.replay_of))


def format_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def preview(value: bytes | None, width: int = 48) -> str:
    """A dead letter's value, safe to print: its length and shape, then JSON text (clipped) when
    it is UTF-8 JSON, else the first bytes in hex. DLQ copies are already redacted."""
    if value is None:
        return "no value"
    n = len(value)
    if value[:4] == b"Obj\x01":
        shape = "Avro container file"
    elif n >= 5 and value[0] == 0:
        shape = f"wire format, schema id {int.from_bytes(value[1:5], 'big')}"
    else:
        lines = _json_lines(value)
        if lines:
            # printable characters only: a value never moves the cursor or recolours a terminal
            text = "".join(c if c.isprintable() else "?" for c in " ".join(value.decode().split()))
            kind = "JSON" if lines == 1 else f"JSON lines ({lines})"
            return f"{n} bytes, {kind}: {text[:width * 2]}{'…' if len(text) > width * 2 else ''}"
        shape = ""
    head = value[:width].hex(" ")
    return f"{n} bytes{', ' + shape if shape else ''}: {head}{' …' if n > width else ''}"


def _json_lines(value: bytes) -> int:
    """How many JSON values `value` holds, one per line (0: not UTF-8 JSON text)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    try:
        json.loads(text)
        return 1
    except ValueError:
        pass
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        for ln in lines:
            json.loads(ln)
    except ValueError:
        return 0
    return len(lines)


def show_key(key: bytes | None) -> str:
    if key is None:
        return "none"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()
    return text if text.isprintable() else "0x" + key.hex()


# -- replay --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Replay:
    letter: DeadLetter
    topic: str
    partition: int | None    # None: the source partition no longer exists; placed by key
    key: bytes | None
    # "header" (the original key), "none" (the original had none), "derived" (not recorded: the
    # publisher's key for the event), "unknown" (not recorded, not derivable: sent without one)
    key_from: str


@dataclass(frozen=True, slots=True)
class Skip:
    letter: DeadLetter
    why: str


def ledger_entry(letter: DeadLetter, topic: str, partition: int, offset: int, now_ms: int) -> dict[str, object]:
    """The ledger value written once `letter` was re-published (and acknowledged) at
    topic/partition/offset."""
    return {"source": letter.source, "digest": letter.digest, "reason": letter.reason,
            "to": f"{topic}:{partition}:{offset}", "at": now_ms}


def plan_replay(letters: Iterable[DeadLetter], ledger: Mapping[str, Mapping[str, object]],
                partitions: Mapping[str, int],
                derive_key: Callable[[DeadLetter], bytes | None] = lambda d: None) -> list[Replay | Skip]:
    """What `cem dlq replay` does with each (already selected) dead letter, in the order of
    their source records (topic, partition, offset, index in the batch), so a partition's
    records go back in the order they first came.
    `ledger`: dead-letter id -> ledger entry of those replayed before; `partitions`: every
    existing topic -> partition count; `derive_key`: the publisher's key for a dead letter
    without cem-source-key (None when it cannot tell)."""
    done_ids = set(ledger)
    done_copies = {(str(e.get("source")), str(e.get("digest"))) for e in ledger.values()}
    out: list[Replay | Skip] = []
    for d in sorted(letters, key=lambda d: (d.source_topic, d.source_partition, d.source_offset, d.batch_index)):
        copy = (d.source, d.digest)
        if d.id in done_ids:
            out.append(Skip(d, f"already replayed ({ledger[d.id].get('to')})"))
            continue
        if copy in done_copies:
            out.append(Skip(d, "a copy of a dead letter already replayed (same source record and value)"))
            continue
        if d.stage in NOT_REPLAYED_STAGES:
            out.append(Skip(d, NOT_REPLAYED_STAGES[d.stage]))
            continue
        if d.source_topic.startswith(("http:", "file:")):
            out.append(Skip(d, f"rejected by the {'collector' if d.source_topic.startswith('http:') else 'import'} "
                               "before reaching Kafka: send it again from its source"))
            continue
        if d.source_topic not in partitions:
            out.append(Skip(d, f"source topic {d.source_topic!r} does not exist"))
            continue
        if not d.value:
            out.append(Skip(d, "empty record: nothing to re-publish"))
            continue
        key: bytes | None
        if d.key_known:
            key, key_from = d.source_key, ("header" if d.source_key is not None else "none")
        else:
            key = derive_key(d)
            key_from = "derived" if key is not None else "unknown"
        part = d.source_partition if 0 <= d.source_partition < partitions[d.source_topic] else None
        if part is None and key is None:
            out.append(Skip(d, f"partition {d.source_partition} of {d.source_topic} does not exist and "
                               "the record has no key to place it by"))
            continue
        done_copies.add(copy)
        out.append(Replay(d, d.source_topic, part, key, key_from))
    return out
