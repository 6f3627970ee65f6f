"""Consent and erasure, the pure parts and the coordinator's decision (no Kafka, no ClickHouse)."""
from __future__ import annotations

import hashlib
import json

import pytest

from cem.events import validate
from cem.identity import IdentityGraph, LookupGraph
from cem.privacy import (NO_CONSENT, BadSubject, Erasure, ErasureRequest, check_subject, digest, erasure_scope,
                         record_of, withhold_identifiers, withholds_consent)
from cem.schemas.registry import default_registry
from cem.settings import IDENTITY_MAP_TOPIC, IDENTITY_MERGES_TOPIC
from cem.sinks.erasure import predicates
from cem.streams.coordinator import CONTROL_HEADER, Coordinator
from cem.streams.identity_log import PROFILE_PREFIX


def test_subject_is_a_customer_id_or_kind_value():
    assert check_subject(" cus-0123456789abcdef ") == "cus-0123456789abcdef"
    assert check_subject("email_hash:ab12") == "email_hash:ab12"
    for bad in ("", "cus-xyz", "C123", "email:a@b.c", "passport:1"):
        with pytest.raises(BadSubject):
            check_subject(bad)


def test_erase_releases_every_identifier_and_a_returning_one_starts_a_new_profile():
    g = IdentityGraph()
    p = g.resolve("e1", {"anonymous_id": "a1", "customer_id": "c1"}, 1).customer_id
    g.resolve("e2", {"customer_id": "c1", "email_hash": "h1"}, 2)
    released = g.erase(p)
    assert [m.identifier for m in released] == ["anonymous_id:a1", "customer_id:c1", "email_hash:h1"]
    assert all(m.profile is None for m in released)
    assert g.owner == {} and p not in g.members and p not in g.first_seen
    assert g.lookup({"customer_id": "c1"}) is None
    again = g.resolve("e9", {"customer_id": "c1"}, 9)
    assert again.customer_id != p and again.created and not again.merges
    assert g.erase("cus-unknown") == []


def test_a_replica_replaying_the_tombstones_forgets_the_identifiers():
    g, replica = IdentityGraph(), LookupGraph()
    r = g.resolve("e1", {"anonymous_id": "a1", "customer_id": "c1"}, 1)
    for m in list(r.mappings) + g.erase(r.customer_id):
        replica.apply(m.identifier, m.profile)
    assert replica.owner == {}


def test_profile_ids_do_not_reveal_the_identifier():
    g = IdentityGraph()
    p = g.resolve("e1", {"customer_id": "c1"}, 1).customer_id
    assert p != "cus-" + hashlib.sha1(b"customer_id:c1").hexdigest()[:16]
    assert IdentityGraph().resolve("e1", {"customer_id": "c1"}, 1).customer_id == p  # a replay names it the same


def test_scope_follows_merges_transitively_but_not_unmerged_ones():
    merges = {
        "m1": {"winner": "A", "loser": "B", "status": "merged", "moved": ["device_id:d1"]},
        "m2": {"winner": "B", "loser": "C", "status": "merged", "moved": ["anonymous_id:x"]},
        "m3": {"winner": "A", "loser": "D", "status": "unmerged", "moved": ["device_id:d9"]},
        "m4": {"winner": "A", "loser": "customer_id:c2", "status": "refused", "moved": []},
        "m5": {"winner": "E", "loser": "F", "status": "merged", "moved": ["device_id:e"]},
    }
    profiles, named, ids = erasure_scope("A", merges)
    assert profiles == ["A", "B", "C"]
    assert named == ["m1", "m2", "m3", "m4"]
    assert ids == {"device_id:d1", "anonymous_id:x"}


def test_an_erasure_carries_digests_and_its_audit_row_no_identifier():
    req = ErasureRequest.new("customer_id:C-ALICE-77", "dpo@example.com", 1_000)
    ids = {"customer_id:C-ALICE-77", "email_hash:HASH-ALICE"}
    e = Erasure.of(req, ["cus-0123456789abcdef"], ids, "s4lt", ("m1",), 2_000)
    assert e.digests == tuple(sorted(hashlib.sha256(f"s4lt{i}".encode()).hexdigest()
                                     for i in ("customer_id:C-ALICE-77", "email_hash:HASH-ALICE")))
    back = Erasure.from_json(json.loads(json.dumps(e.to_json())))
    assert back.digests == e.digests and back.profiles == e.profiles and back.request.erasure_id == req.erasure_id
    assert back.request.subject == "cus-0123456789abcdef"  # the identifier it was asked by stays behind
    assert "ALICE" not in json.dumps(e.to_json())
    row = record_of(e, {"touchpoints": 5, "sessions": 2}, 3_000).as_row()
    assert row["identifiers_removed"] == 2 and row["profiles_removed"] == 1 and row["status"] == "erased"
    assert row["tables"] == ["sessions", "touchpoints"] and row["rows_deleted"]["touchpoints"] == 5
    assert "ALICE" not in json.dumps(row)
    assert row["identifiers_digest"] == hashlib.sha256("\n".join(e.digests).encode()).hexdigest()


def test_sql_predicates_take_ids_and_digests_only():
    req = ErasureRequest.new("cus-0123456789abcdef", "ops", 1)
    e = Erasure.of(req, ["cus-0123456789abcdef"], {"customer_id:c1"}, "abc123")
    where = predicates(e)
    assert set(where) == {"touchpoints", "sessions", "journeys", "negative_moments", "alerts",
                          "customer_lifecycle", "customers", "identity_merges"}
    assert digest("abc123", "customer_id:c1") in where["touchpoints"] and "c1'" not in where["touchpoints"]
    with pytest.raises(ValueError):
        predicates(Erasure.of(req, ["cus-x'; DROP TABLE t; --"], set(), "abc"))


def test_without_consent_an_event_needs_and_keeps_no_identifier():
    ev = {"event_id": "e1", "event_type": "page_view", "channel": "web", "source": "s",
          "occurred_at": 1_700_000_000_000, "received_at": 1_700_000_000_000, "identifiers": {}, "web": None,
          "consent": False}
    assert validate(ev, 1_700_000_000_000, 10**12) is None
    assert validate(dict(ev, consent=None), 1_700_000_000_000, 10**12).reason == "no_identifier"
    ev["identifiers"] = {"anonymous_id": "a1", "customer_id": "c1"}
    assert withholds_consent(ev) and not withholds_consent(dict(ev, consent=True))
    assert not any(withhold_identifiers(ev)["identifiers"].values())
    assert NO_CONSENT == "no-consent"


class Recorder:
    """Stands in for the producer and the batch publisher."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, dict]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, **kw: object) -> None:
        self.records.append((topic, key, value, kw))

    def flush_partition(self, topic: str, partition: int) -> None:
        pass

    def publish(self, *args: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def wait_acked(self) -> None:
        pass


def test_the_coordinator_erases_a_merged_customer_and_hands_the_erasure_on():
    rec = Recorder()
    g = IdentityGraph()
    merges: dict = {}
    c = Coordinator(g, default_registry(), rec, rec, None, "out", 4, clock=lambda: 5.0, merge_log=lambda: merges)
    older = g.resolve("e1", {"loyalty_id": "L1"}, 10).customer_id
    web = g.resolve("e2", {"anonymous_id": "a1", "customer_id": "c1"}, 20).customer_id
    r = g.resolve("e3", {"customer_id": "c1", "loyalty_id": "L1"}, 30)
    (m,) = r.merges
    merges[m.merge_id] = {"winner": m.winner, "loser": m.loser, "status": "merged", "moved": list(m.moved)}
    assert m.winner == older and m.loser == web
    other = g.resolve("e4", {"customer_id": "c2"}, 40).customer_id

    req = ErasureRequest.new("customer_id:c1", "dpo", 100)
    c.process(json.dumps({"control": "erase", "request": req.to_json()}).encode(), "links", 0, 0,
              [(CONTROL_HEADER, b"erase")])
    assert not [r for r in rec.records if r[0] == "out"]  # controls wait for the changelog's acks
    c.flush()
    assert set(g.owner) == {"customer_id:c2"} and g.owner["customer_id:c2"] == other
    tomb = {(t, k.decode()) for t, k, v, _ in rec.records if v is None}
    assert {(IDENTITY_MAP_TOPIC, i) for i in ("anonymous_id:a1", "customer_id:c1", "loyalty_id:L1")} <= tomb
    assert (IDENTITY_MAP_TOPIC, PROFILE_PREFIX + older) in tomb and (IDENTITY_MERGES_TOPIC, m.merge_id) in tomb
    controls = [(k.decode(), json.loads(v)) for t, k, v, kw in rec.records if t == "out"]
    assert {k for k, _ in controls} == {older, web}
    (carrying,) = [b for _, b in controls if b.get("erasure")]
    e = Erasure.from_json(carrying["erasure"])
    assert e.found and e.profiles == (older, web) and len(e.digests) == 3 and e.salt == req.erasure_id

    # replayed after a crash: nothing left to release, and it says so
    rec.records.clear()
    c.process(json.dumps({"control": "erase", "request": req.to_json()}).encode(), "links", 0, 1,
              [(CONTROL_HEADER, b"erase")])
    c.flush()
    (again,) = [json.loads(v) for t, k, v, kw in rec.records if t == "out" and json.loads(v).get("erasure")]
    assert not Erasure.from_json(again["erasure"]).found


def test_a_replay_from_the_partitions_in_any_order_keeps_no_trace_of_an_erased_profile():
    g = IdentityGraph()
    r = g.resolve("e1", {"anonymous_id": "a1", "customer_id": "c1"}, 1)
    p = r.customer_id
    gone = g.erase(p)
    # the profile's key and its identifiers' keys live in different partitions of the changelog:
    # its first sighting and tombstone may replay before the identifiers' mappings and tombstones
    replica = IdentityGraph()
    replica.apply_profile(p, 1)
    replica.apply_profile(p, None)
    for m in list(r.mappings) + gone:
        replica.apply(m.identifier, m.profile)
    assert replica.owner == {} and replica.members == {} and replica.first_seen == {}


def test_an_email_or_phone_subject_is_hashed_as_at_the_edge():
    from cem.connectors.pseudonymize import Pseudonymizer, pseudonymize_subject
    pz = Pseudonymizer(b"k")
    assert pseudonymize_subject("email: Alice@Example.com", pz) == "email_hash:" + pz.email_hash("alice@example.com")
    assert pseudonymize_subject("phone:+49 30 1234567", pz) == "phone_hash:" + pz.phone_hash("+49301234567")
    assert pseudonymize_subject("customer_id:C1", pz) == "customer_id:C1"
    assert check_subject(pseudonymize_subject("email:a@b.de", pz)).startswith("email_hash:")


class StageRows:
    """The customer stage's row publisher: rows by topic, and records produced outside rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict]] = []
        self.produced: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.flushes = 0

    def publish(self, topic: str, key: str, row: dict) -> None:
        self.rows.append((topic, key, row))

    def produce(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers=None) -> None:
        self.produced.append((topic, partition, key, value))

    def flush(self) -> None:
        self.flushes += 1


def test_the_customer_stage_drops_an_erased_customer_and_passes_the_erasure_on_after_its_rows():
    from cem.rules import load_routes, load_rules
    from cem.schemas.serde import encode_batch
    from cem.settings import ERASURES_TOPIC
    from cem.streams.customers import CONTROL, CustomerStage, decode_state, encode_state
    from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
    from cem.streams.state import KeyedState

    changelog: list[tuple[int, bytes, bytes | None]] = []
    table = KeyedState(encode_state, decode_state, lambda p: [], lambda p, k, v: changelog.append((p, k, v)))
    rows = StageRows()
    stage = CustomerStage(table, default_registry(), rows, lambda key, body: None, rules=load_rules(None),
                          routes=load_routes(None))

    def control(body: dict) -> None:
        stage.process(json.dumps(body).encode(), "cem.touchpoints", 0, 0, [(CONTROL, body["control"].encode())])

    def touch(eid: str, customer: str, etype: str = "payment_failed") -> bytes:
        ev = {"event_id": eid, "event_type": etype, "channel": "web", "occurred_at": 1_700_000_000_000,
              "received_at": 1_700_000_000_000, "source": "t", "identifiers": {"anonymous_id": "anon-zz"},
              "web": (ATTRIBUTE_RECORDS["web"], {"url": "/pay"}),
              "cem": (RESOLUTION, {"customer_id": customer, "late": False, "processed_at": 0})}
        return encode_batch([ev], default_registry().latest("touchpoint").parsed)

    stage.process(touch("e1", "cus-alice"), "cem.touchpoints", 0, 1, None)
    stage.process(touch("e2", "cus-bob"), "cem.touchpoints", 0, 2, None)
    stage.process(touch("e3", NO_CONSENT, "page_view"), "cem.touchpoints", 0, 3, None)  # nobody's: no timeline
    control({"control": "merge", "merge_id": "m", "winner": "cus-alice", "loser": "cus-alice-old", "at": 0})
    stage.flush()
    assert table.get("cus-alice") is not None and stage.merges.get("cus-alice-old").merged_into == "cus-alice"
    assert table.get(NO_CONSENT) is None
    assert any(t == "cem.alerts" and r["customer_id"] == "cus-alice" for t, _, r in rows.rows)

    erasure = Erasure.of(ErasureRequest.new("cus-0123456789abcdef", "dpo", 1), ["cus-alice", "cus-alice-old"],
                         {"anonymous_id:anon-zz"}, "salt")
    control({"control": "erase", "customer": "cus-alice-old"})
    control({"control": "erase", "customer": "cus-alice", "erasure": erasure.to_json()})
    assert not rows.produced  # nothing passed on before the flush
    changelog.clear()
    stage.flush()
    assert table.get("cus-alice") is None and stage.merges.get("cus-alice-old") is None
    assert table.get("cus-bob") is not None
    assert {(k, v) for _, k, v in changelog} == {(b"cus-alice", None)}  # (the merge book has its own changelog)
    [(topic, partition, key, value)] = rows.produced
    assert topic == ERASURES_TOPIC and partition == 0
    assert Erasure.from_json(json.loads(value)).digests == erasure.digests
    # her deadlines fire on nothing: no row for her after the erasure
    rows.rows.clear()
    control({"control": "watermark", "wm": 1_700_000_000_000 + 10 * 86_400_000})
    stage.flush()
    assert not [r for _, key, r in rows.rows if key in ("cus-alice", "cus-alice-old")]
    assert [r for _, key, r in rows.rows if key == "cus-bob"]  # his still do


def test_the_shared_mapping_reads_consent_and_withholds_identifiers_at_the_edge():
    from cem.connectors.mapping import to_touchpoint
    from cem.connectors.pseudonymize import Pseudonymizer
    now = 1_700_000_000_000
    obj = {"event_type": "page_view", "occurred_at": now - 1_000,
           "identifiers": {"anonymous_id": "a", "email": "x@y.de"}}

    def mapped(**over):
        return to_touchpoint(dict(obj, **over), default_channel="web", source="s", now_ms=now, horizon_ms=10**11,
                             pseudonymizer=Pseudonymizer(b"k"))

    assert mapped(consent="false")["identifiers"] == {} and mapped(consent=False)["consent"] is False  # a CSV column
    assert mapped()["consent"] is None and mapped()["identifiers"]["anonymous_id"] == "a"
    assert mapped(consent=True)["identifiers"]["email_hash"]
    assert mapped(consent="maybe").reason == "bad_type:consent"


def test_a_malformed_erase_control_is_dead_lettered_with_its_source():
    sent = []

    class Dead:
        def send(self, value, reason, detail, **where):  # noqa: ANN001, ANN003
            sent.append((value, reason, where))

    rec = Recorder()
    c = Coordinator(IdentityGraph(), default_registry(), rec, rec, Dead(), "out", 4, clock=lambda: 5.0)
    body = json.dumps({"control": "erase", "request": {"subject": "nobody"}}).encode()
    c.process(body, "cem.identity.links", 0, 17, [(CONTROL_HEADER, b"erase")], key=None)
    [(value, reason, where)] = sent
    assert value == body and reason == "bad_erasure_request" and where["offset"] == 17 and where["key"] is None
    assert not rec.records and c.erasures == 0


def test_a_customer_named_by_an_id_merged_away_since_is_erased_whole():
    from cem.privacy import surviving_profile
    merges = {"m1": {"winner": "B", "loser": "A", "status": "merged"},
              "m2": {"winner": "C", "loser": "B", "status": "merged"},
              "m3": {"winner": "A", "loser": "C", "status": "unmerged"}}
    assert surviving_profile("A", merges) == "C" and surviving_profile("C", merges) == "C"
    cycle = {"c1": {"winner": "Y", "loser": "X", "status": "merged"},
             "c2": {"winner": "X", "loser": "Y", "status": "merged"}}
    assert surviving_profile("X", cycle) in ("X", "Y")  # a cycle ends

    rec = Recorder()
    g = IdentityGraph()
    log_: dict = {}
    c = Coordinator(g, default_registry(), rec, rec, None, "out", 4, clock=lambda: 5.0, merge_log=lambda: log_)
    older = g.resolve("e1", {"loyalty_id": "L1"}, 10).customer_id
    web = g.resolve("e2", {"anonymous_id": "a1", "customer_id": "c1"}, 20).customer_id
    (m,) = g.resolve("e3", {"customer_id": "c1", "loyalty_id": "L1"}, 30).merges
    log_[m.merge_id] = {"winner": m.winner, "loser": m.loser, "status": "merged", "moved": list(m.moved)}
    req = ErasureRequest.new(web, "dpo", 100)  # the id her web rows carried before the merge
    c.process(json.dumps({"control": "erase", "request": req.to_json()}).encode(), "links", 0, 0,
              [(CONTROL_HEADER, b"erase")])
    c.flush()
    assert g.owner == {} and older not in g.first_seen
    (e,) = [Erasure.from_json(json.loads(v)["erasure"]) for t, k, v, kw in rec.records
            if t == "out" and json.loads(v).get("erasure")]
    assert e.found and e.profiles == (older, web) and len(e.digests) == 3


def test_an_event_resolved_to_an_erased_id_just_after_the_erasure_builds_no_timeline():
    from cem.rules import load_routes, load_rules
    from cem.schemas.serde import encode_batch
    from cem.streams.customers import CONTROL, ERASED_HOLD_S, CustomerStage, decode_state, encode_state
    from cem.streams.ingest import ATTRIBUTE_RECORDS, RESOLUTION
    from cem.streams.state import KeyedState

    clock = [1_000.0]
    table = KeyedState(encode_state, decode_state, lambda p: [], lambda p, k, v: None)
    rows = StageRows()
    stage = CustomerStage(table, default_registry(), rows, lambda key, body: None, clock=lambda: clock[0],
                          rules=load_rules(None), routes=load_routes(None))

    def touch(eid: str, customer: str) -> bytes:
        ev = {"event_id": eid, "event_type": "payment_failed", "channel": "web", "occurred_at": 1_700_000_000_000,
              "received_at": 1_700_000_000_000, "source": "t", "identifiers": {"anonymous_id": "anon-zz"},
              "web": (ATTRIBUTE_RECORDS["web"], {"url": "/pay"}),
              "cem": (RESOLUTION, {"customer_id": customer, "late": False, "processed_at": 0})}
        return encode_batch([ev], default_registry().latest("touchpoint").parsed)

    stage.process(json.dumps({"control": "erase", "customer": "cus-gone"}).encode(), "cem.touchpoints", 0, 0,
                  [(CONTROL, b"erase")])
    stage.process(touch("late-1", "cus-gone"), "cem.touchpoints", 0, 1, None)  # a stale replica's
    stage.flush()
    assert table.get("cus-gone") is None and not [r for _, k, r in rows.rows if k == "cus-gone"]
    clock[0] += ERASED_HOLD_S + 1  # long after: the id is nobody's to protect any more
    stage.process(json.dumps({"control": "erase", "customer": "cus-other"}).encode(), "cem.touchpoints", 0, 2,
                  [(CONTROL, b"erase")])
    stage.process(touch("late-2", "cus-gone"), "cem.touchpoints", 0, 3, None)
    assert table.get("cus-gone") is not None
