"""Hostile input (issue 11): a corpus of what strangers send — deep nesting, huge strings, invalid
UTF-8, NaN/Infinity, timestamps in year 1 and 9999, unknown channels and event types, a reused
event_id with other content, a schema id of another subject — each refused with its reason by
the decoders every edge shares; then atheris fuzzes every decoder, seeded with that corpus.

In CI the fuzz run is reproducible: a fixed libFuzzer seed (`CEM_FUZZ_SEED`, default 1), a fixed
number of runs (`CEM_FUZZ_RUNS`, default 300,000 per target), PYTHONHASHSEED=0, and a time cap
(`CEM_FUZZ_SECONDS`, default 30) — so CI replays exactly the inputs a developer's run of the same
commit tried, and a red CI always reproduces. Exploration is `make fuzz` (CEM_FUZZ_SEED=0: a
random seed; longer). A crash is any exception other than the decoder's own refusal; each one
found becomes a regression case here (HOSTILE below, or its own test, like the importer one)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cem.connectors import segment, snowplow
from cem.connectors.importers import MappingConflict, load_mapping, row_to_object
from cem.connectors.mapping import to_touchpoint
from cem.connectors.pseudonymize import Pseudonymizer
from cem.events import Rejection
from cem.schemas.registry import default_registry
from cem.schemas.serde import DecodeError, decode_record, encode_batch
from tests.fuzz.harnesses import HORIZON, NOW, TARGETS

REPO = Path(__file__).resolve().parents[2]
FUZZ_SECONDS = int(os.environ.get("CEM_FUZZ_SECONDS", "30"))
FUZZ_RUNS = int(os.environ.get("CEM_FUZZ_RUNS", "300000"))
FUZZ_SEED = int(os.environ.get("CEM_FUZZ_SEED", "1"))


def ev(**over) -> dict:
    base = {"event_id": "h-1", "event_type": "search", "channel": "web", "occurred_at": NOW - 1000,
            "identifiers": {"anonymous_id": "a-1"}, "attributes": {"query": "lamp"}}
    base.update(over)
    return base


def native(obj) -> Rejection | dict:
    return to_touchpoint(obj, default_channel="web", source="t", now_ms=NOW, horizon_ms=HORIZON,
                         pseudonymizer=Pseudonymizer(b"k"))


def nested(depth: int):
    v: object = "x"
    for _ in range(depth):
        v = {"a": v}
    return v


#: (corpus entry, the reason it must be refused with)
HOSTILE = [
    (ev(attributes=nested(200)), "unknown_field"),
    (ev(attributes={"query": nested(200)}), "bad_type"),
    (ev(attributes={"query": "x" * 100_000}), "too_long"),
    (ev(occurred_at=float("nan")), "missing_field"),       # "occurred_at must be epoch milliseconds …"
    (ev(occurred_at=float("inf")), "missing_field"),
    (ev(occurred_at="0001-01-01T00:00:00Z"), "missing_field"),
    (ev(occurred_at="9999-12-31T23:59:59Z"), "future_timestamp"),
    (ev(channel="fax"), "unknown_channel"),
    (ev(event_type="teleport"), "unknown_event_type"),
    (ev(identifiers={}), "no_identifier"),
    (ev(identifiers={"email": "not-an-email"}), "bad_value"),
    (ev(event_id={"id": 1}), "bad_type"),
    # found by the fuzzer: text that str.isdigit() accepts but int() refuses raised ValueError
    (ev(event_type="click", attributes={"y": "-" * 60 + "2"}), "bad_type"),
    (ev(event_type="click", attributes={"x": "\u00b2"}), "bad_type"),
    (ev(event_type="click", attributes={"x": "1" * 5000}), "bad_type"),
    (ev(occurred_at="\u00b2"), "missing_field"),
    (ev(occurred_at="9" * 5000), "missing_field"),
]


@pytest.mark.parametrize("obj,reason", HOSTILE, ids=[r for _, r in HOSTILE])
def test_hostile_events_are_refused_with_their_reason(obj, reason):
    r = native(obj)
    assert isinstance(r, Rejection), r
    assert r.reason.split(":")[0] == reason, (r.reason, r.detail)
    assert r.detail  # says what was wrong


def test_invalid_utf8_and_deep_json_never_reach_a_decoder_unrefused():
    for body in (b'{"batch": [{"event_id": "\xff\xfe"}]}', b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises((ValueError, UnicodeDecodeError, RecursionError)):
            json.loads(body)  # the collector answers these 400 bad_json and dead-letters them


def test_a_reused_event_id_with_other_content_is_one_event_downstream():
    # the event_id is the dedup key end to end (ReplacingMergeTree, Timeline); two contents
    # under one id are both accepted at the edge, and the second replaces the first in ClickHouse
    a, b = native(ev(attributes={"query": "lamp"})), native(ev(attributes={"query": "sofa"}))
    assert isinstance(a, dict) and isinstance(b, dict) and a["event_id"] == b["event_id"]


def test_foreign_schema_ids_and_broken_batches_are_refused():
    reg = default_registry()
    reader = reg.latest("touchpoint").parsed
    cases = {b"\x00" + struct.pack(">I", 4242) + b"\x02": "unknown_schema_id",
             b"Obj\x01" + b"\x00" * 40: "corrupt_batch",
             b"\x07garbage": "bad_magic_byte",
             b"": "empty_record"}
    good = encode_batch([dict(native(ev()), cem=None)], reader)
    cases[good[:-7]] = "corrupt_batch"  # truncated container file
    for value, reason in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_record(value, reg, reader)
        assert err.value.reason == reason, (value[:12], err.value.reason)


def test_mutated_containers_decode_the_same_with_and_without_datums():
    # found by a differential run in development: a metadata key length running before the
    # start of the file made landing's container scan raise IndexError instead of refusing it
    import random
    from tests.fuzz.harnesses import avro_record
    reader = default_registry().latest("touchpoint").parsed
    base = encode_batch([dict(native(ev(event_id=f"m-{i}")), cem=None) for i in range(10)], reader)
    rng = random.Random(7)
    for _ in range(3_000):
        v = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            if not v:
                break
            p = rng.randrange(len(v))
            kind = rng.random()
            if kind < 0.5:
                v[p] = rng.randrange(256)
            elif kind < 0.7:
                del v[p:p + rng.randint(1, 20)]
            elif kind < 0.85:
                v[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
            else:
                del v[p:]
        avro_record(bytes(v))  # raises on a difference or on any error but the decoders' own
    avro_record(base)
    from cem.schemas.ocf import write_long
    avro_record(base[:4] + b"\x02" + write_long(-1_000_000) + base[6:])  # a key length of -1,000,000


def test_tracker_payloads_with_hostile_values_are_refused_by_field():
    with pytest.raises(segment.SegmentError):
        segment.to_native({"type": "track", "event": nested(50), "anonymousId": "a", "messageId": "m"}, NOW)
    year_9999 = {"type": "page", "anonymousId": "a", "messageId": "m", "timestamp": "9999-01-01T00:00:00Z"}
    assert native(segment.to_native(year_9999, NOW)).reason == "future_timestamp"
    # a device whose clock is wrong by millennia, but consistent: sentAt corrects it
    corrected = native(segment.to_native({**year_9999, "sentAt": "9999-01-01T00:00:01Z"}, NOW))
    assert corrected["occurred_at"] == NOW - 1000
    with pytest.raises(snowplow.SnowplowError):
        snowplow.to_native({"e": "ue", "eid": "e", "duid": "d", "ue_px": "\u00ff" * 10}, NOW)


def test_an_importer_column_that_collides_with_a_section_of_the_row_is_a_mapping_conflict():
    # found by the fuzzer in CI: a JSONL row whose "identifiers" is a string, plus an "email"
    # column the default mapping puts at identifiers.email, crashed row_to_object
    row = {"occt_type": "b", "occurred_at": 19, "identifiers": "0", "email": []}
    with pytest.raises(MappingConflict, match="'email' maps to identifiers.email but the row's 'identifiers' is a str"):
        row_to_object(row, load_mapping("store", None), set())
    ok = row_to_object({"identifiers": {"customer_id": "c1"}, "email": "a@b.c"}, load_mapping("store", None), set())
    assert ok["identifiers"] == {"customer_id": "c1", "email": "a@b.c"}


def corpus(tmp: Path) -> Path:
    seeds = tmp / "seeds"
    seeds.mkdir()
    for i, (obj, _) in enumerate(HOSTILE):
        (seeds / f"hostile-{i}.json").write_text(json.dumps({"batch": [obj]}, default=str))
    (seeds / "segment.json").write_text(json.dumps({"batch": [{"type": "track", "event": "Order Completed",
                                                              "anonymousId": "a", "messageId": "m"}]}))
    (seeds / "snowplow.json").write_text(json.dumps({"schema": "iglu:x", "data": [{"e": "se", "eid": "e",
                                                                                   "duid": "d", "se_ca": "c",
                                                                                   "se_ac": "a"}]}))
    (seeds / "importer-conflict.json").write_text('{"identifiers": "0", "email": [], "occurred_at": 19}')
    (seeds / "rules.toml").write_bytes((REPO / "cem" / "rules" / "default.toml").read_bytes())
    reader = default_registry().latest("touchpoint").parsed
    (seeds / "batch.avro").write_bytes(encode_batch([dict(native(ev()), cem=None)], reader))
    return seeds


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzzer_finds_no_crash(target, tmp_path):
    seeds = corpus(tmp_path)
    work = tmp_path / "corpus"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "tests.fuzz.harnesses", target, f"-max_total_time={FUZZ_SECONDS}",
                           f"-runs={FUZZ_RUNS}", f"-seed={FUZZ_SEED}", "-rss_limit_mb=2048", "-timeout=10",
                           f"-artifact_prefix={tmp_path}/", str(work), str(seeds)],
                          cwd=REPO, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120,
                          env=dict(os.environ, PYTHONHASHSEED="0"))
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, f"{target} crashed or hung; the input is in {tmp_path}:\n{tail}"
    assert "Done" in tail or "DONE" in tail or "pulse" in tail or "INITED" in tail, tail
