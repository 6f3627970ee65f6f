"""cem.dead_letters: parsing cem.dlq headers, selection, summary, safe previews, replay plan."""
from datetime import datetime, timezone

import pytest

from cem.dead_letters import (DeadLetter, Replay, Selection, Skip, ledger_entry, parse, parse_since,
                              plan_replay, preview, select, show_key, summarize)

NOW = 1_800_000_000_000
PARTS = {"cem.raw.web": 4, "cem.touchpoints": 4, "cem.identity.links": 1}


def headers(reason="unknown_schema_id", stage="ingest", topic="cem.raw.web", partition=2, offset=7,
            batch=-1, failed=NOW - 60_000, **extra):
    h = [("cem-reason", reason.encode()), ("cem-detail", b"schema id 9 is not registered"),
         ("cem-source-topic", topic.encode()), ("cem-source-partition", str(partition).encode()),
         ("cem-source-offset", str(offset).encode()), ("cem-batch-index", str(batch).encode()),
         ("cem-failed-at", str(failed).encode()), ("cem-stage", stage.encode())]
    return h + [(k.replace("_", "-"), v) for k, v in extra.items()]


def letter(dlq_offset=0, value=b"\x00\x00\x00\x00\x09body", **kw) -> DeadLetter:
    return parse(headers(**kw), value, 0, dlq_offset)


def test_parse_reads_every_header_and_the_optional_ones():
    d = parse(headers(batch=3, cem_source_key=b"cus-1", cem_replay_of=b"cem.dlq:1:4"), b"v", 1, 12)
    assert (d.reason, d.stage, d.source_topic, d.source_partition, d.source_offset, d.batch_index) == \
        ("unknown_schema_id", "ingest", "cem.raw.web", 2, 7, 3)
    assert d.failed_at == NOW - 60_000 and d.source_key == b"cus-1" and d.replay_of == "cem.dlq:1:4"
    assert d.id == "1:12" and d.source == "cem.raw.web:2:7#3" and d.value == b"v" and d.key_known
    old = letter()  # written before cem-source-key existed
    assert old.source == "cem.raw.web:2:7" and old.source_key is None and not old.key_known
    keyless = parse(headers(cem_source_key=None), b"v", 0, 1)  # a null header value: the record had no key
    assert keyless.key_known and keyless.source_key is None


def test_parse_survives_foreign_or_garbled_headers():
    d = parse([("cem-source-partition", b"x"), ("cem-failed-at", b"soon"), ("other", None)], None, 0, 1)
    assert (d.reason, d.stage, d.source_topic, d.source_partition, d.failed_at) == ("?", "?", "?", -1, None)
    assert parse(None, b"", 3, 4).id == "3:4"


@pytest.mark.parametrize("text, expected", [
    ("90s", NOW - 90_000), ("30m", NOW - 1_800_000), ("2h", NOW - 7_200_000), ("7d", NOW - 7 * 86_400_000),
    ("1w", NOW - 7 * 86_400_000), ("1.5h", NOW - 5_400_000),
    ("2026-12-04", int(datetime(2026, 12, 4, tzinfo=timezone.utc).timestamp() * 1000)),
    ("2026-12-04T10:30Z", int(datetime(2026, 12, 4, 10, 30, tzinfo=timezone.utc).timestamp() * 1000)),
    ("2026-12-04T12:30+02:00", int(datetime(2026, 12, 4, 10, 30, tzinfo=timezone.utc).timestamp() * 1000)),
])
def test_parse_since(text, expected):
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("bad", ["yesterday", "5 parsecs", "", "-2h"])
def test_parse_since_refuses_with_what_is_accepted(bad):
    with pytest.raises(ValueError, match="duration back from now"):
        parse_since(bad, NOW)


def test_selection_by_reason_family_since_and_stage():
    a = letter(0, reason="missing_field:event_id")
    b = letter(1, reason="missing_field_x")
    c = letter(2, reason="unknown_schema_id", failed=NOW - 10 * 86_400_000)
    d = letter(3, reason="unknown_schema_id", stage="landing")
    e = parse([("cem-reason", b"unknown_schema_id")], b"v", 0, 4)  # no failed-at
    letters = [a, b, c, d, e]
    assert select(letters, Selection(reason="missing_field")) == [a]
    assert select(letters, Selection(reason="missing_field:event_id")) == [a]
    assert select(letters, Selection(reason="missing_field:other")) == []
    assert select(letters, Selection(reason="unknown_schema_id")) == [c, d, e]
    assert select(letters, Selection(reason="unknown_schema_id", since_ms=NOW - 86_400_000)) == [d]
    assert select(letters, Selection(stage="landing")) == [d]
    assert select(letters, Selection()) == letters


def test_summary_counts_by_reason_and_origin_with_time_range():
    letters = [letter(0), letter(1, failed=NOW - 5), letter(2, reason="too_old", stage="ingest", failed=NOW),
               letter(3, reason="insert_rejected", stage="landing", topic="cem.touchpoints",
                      cem_replay_of=b"cem.dlq:0:0")]
    s = summarize(letters)
    assert s.total == 4
    assert s.by_reason == (("unknown_schema_id", 2), ("insert_rejected", 1), ("too_old", 1))
    assert s.by_origin[0] == ("unknown_schema_id", "ingest", "cem.raw.web", 2)
    assert ("insert_rejected", "landing", "cem.touchpoints", 1) in s.by_origin
    assert (s.oldest, s.newest) == (NOW - 60_000, NOW)
    assert s.replays_failed_again == 1
    assert summarize([]).oldest is None


def test_preview_is_safe_and_says_the_shape():
    assert preview(None) == "no value"
    assert preview(b"\x00\x00\x00\x00\x09\x02ab") == "8 bytes, wire format, schema id 9: 00 00 00 00 09 02 61 62"
    assert preview(b"Obj\x01" + b"\x00" * 100).startswith("104 bytes, Avro container file: 4f 62 6a 01")
    assert preview(b"Obj\x01" + b"\x00" * 100).endswith(" …")
    assert preview(b'{"event_id": "e1",\n "x": 1}') == '27 bytes, JSON: {"event_id": "e1", "x": 1}'
    assert preview(b'{"a": 1}\n{"a": 2}\n') == '18 bytes, JSON lines (2): {"a": 1} {"a": 2}'
    assert preview('{"a": "\u009b31m"}'.encode()) == '14 bytes, JSON: {"a": "?31m"}'
    long_json = b'{"k": "' + b"a" * 500 + b'"}'
    assert preview(long_json).endswith("…") and len(preview(long_json)) < 140
    assert preview(b"\xff\xfe\x1b[31m") == "7 bytes: ff fe 1b 5b 33 31 6d"  # no escape codes reach a terminal
    assert show_key(None) == "none" and show_key(b"cus-1") == "cus-1" and show_key(b"\x1b[2J") == "0x1b5b324a"
    assert show_key(b"\xff") == "0xff"


def test_plan_replays_to_source_partition_with_key_from_header_derived_or_none():
    with_key = letter(0, cem_source_key=b"anon-1")
    derivable = letter(1, offset=8)
    underivable = letter(2, offset=9, value=b"Obj\x01container")
    keyless = letter(3, offset=10, cem_source_key=None)
    plan = plan_replay([with_key, derivable, underivable, keyless], {}, PARTS,
                       derive_key=lambda d: b"derived" if d.dlq_offset in (1, 3) else None)
    assert plan == [Replay(with_key, "cem.raw.web", 2, b"anon-1", "header"),
                    Replay(derivable, "cem.raw.web", 2, b"derived", "derived"),
                    Replay(underivable, "cem.raw.web", 2, None, "unknown"),
                    Replay(keyless, "cem.raw.web", 2, None, "none")]  # known to have had none: not derived


def test_plan_goes_in_source_order_whatever_the_dlq_order():
    late, early, batch_b, batch_a = letter(0, offset=9), letter(1, offset=3), letter(2, offset=5, batch=2), \
        letter(3, offset=5, batch=0)
    plan = plan_replay([late, early, batch_b, batch_a], {}, PARTS)
    assert [p.letter for p in plan] == [early, batch_a, batch_b, late]


def test_plan_replays_both_a_whole_record_and_one_event_of_a_batch():
    whole = letter(0, batch=-1)
    one = letter(1, batch=4, reason="unknown_event_type")
    plan = plan_replay([whole, one], {}, PARTS)
    assert [p.letter for p in plan if isinstance(p, Replay)] == [whole, one]


def test_plan_skips_what_was_replayed_and_copies_of_it():
    first = letter(0)
    again = letter(5)  # the same bad record dead-lettered twice (redelivered after a crash)
    other = letter(6, offset=99)
    ledger = {first.id: ledger_entry(first, "cem.raw.web", 2, 41, NOW)}
    plan = plan_replay([first, again, other], ledger, PARTS)
    assert isinstance(plan[0], Skip) and "already replayed (cem.raw.web:2:41)" in plan[0].why
    assert isinstance(plan[1], Skip) and "copy" in plan[1].why
    assert plan[2] == Replay(other, "cem.raw.web", 2, None, "unknown")
    # within one run too: the second copy is not re-published
    plan = plan_replay([first, again], {}, PARTS)
    assert isinstance(plan[0], Replay) and isinstance(plan[1], Skip)
    # the same source record with another value (one event re-encoded) is its own dead letter
    assert all(isinstance(p, Replay) for p in plan_replay([first, letter(7, value=b"other")], {}, PARTS))


def test_plan_skips_what_has_no_topic_to_go_back_to_and_says_why():
    collector = letter(0, topic="http:web-shop", partition=-1, offset=-1, stage="collector", batch=0)
    imported = letter(1, topic="file:/data/x.csv", partition=-1, offset=-1, stage="import")
    webhook = letter(2, reason="webhook_parked", stage="notify", topic="cem.alerts")
    gone = letter(3, topic="cem.raw.gone")
    empty = letter(4, reason="empty_record", value=None)
    lost_partition = letter(5, partition=9)
    plan = plan_replay([collector, imported, webhook, gone, empty, lost_partition], {}, PARTS)
    assert all(isinstance(p, Skip) for p in plan)
    why = {p.letter.dlq_offset: p.why for p in plan if isinstance(p, Skip)}
    whys = [why[i] for i in range(6)]
    assert "collector" in whys[0] and "send it again" in whys[0]
    assert "import" in whys[1]
    assert "cem notify" in whys[2]
    assert "does not exist" in whys[3]
    assert "empty" in whys[4]
    assert "partition 9" in whys[5]
    # a known key places the record when its partition is gone
    moved = plan_replay([letter(5, partition=9, cem_source_key=b"k")], {}, PARTS)
    assert moved == [Replay(moved[0].letter, "cem.raw.web", None, b"k", "header")]


def test_derive_key_is_the_routing_key_a_cem_producer_gives_a_single_event():
    from cem.identity import customer_key
    from cem.kafka.dlq_replay import derive_key
    from cem.schemas.registry import default_registry
    from cem.schemas.serde import encode_batch, encode_single
    from cem.sim.generator import touchpoints
    w = default_registry().latest("touchpoint")
    ev = next(touchpoints(1, seed=3, start_ms=NOW, channels=("web",)))
    single = encode_single(ev, w.id, w.parsed)
    assert derive_key(letter(value=single)) == customer_key(ev["identifiers"]).encode()
    assert derive_key(letter(value=encode_batch([ev], w.parsed))) is None  # cem's batches carry no key
    assert derive_key(letter(value=single, topic="cem.identity.links")) is None  # not a raw topic
    assert derive_key(letter(value=b"\x00\x00\x00\x00\x09body")) is None  # still not decodable
    assert derive_key(letter(value=None)) is None
