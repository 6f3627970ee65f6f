"""Importers on the real broker: each channel's sample export lands as typed touchpoints on its
raw topic; every bad row reaches cem.dlq with file, line and reason; no raw PII anywhere."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cem.kafka.connection import KafkaConnection
from cem.connectors.importers import import_file
from cem.connectors.pseudonymize import Pseudonymizer
from cem.settings import ALL_TOPICS, RAW_TOPICS
from tests.support.pipeline import dlq_records, raw_events, read_topic

pytestmark = pytest.mark.integration
FIX = Path(__file__).resolve().parent.parent / "fixtures"

CASES = {
    "store": ("pos_transactions.csv", {"pos-0001", "pos-0002", "pos-0003", "pos-0004"},
              {"missing_field:occurred_at": 1, "bad_type:attributes.amount_cents": 1, "unknown_event_type": 1,
               "no_identifier": 1}),
    "phone": ("cdr.csv", {"cdr-1", "cdr-2", "cdr-3", "cdr-4", "cdr-5"},
              {"bad_value:identifiers.phone": 1, "bad_value:attributes.hold_seconds": 1}),
    "returns": ("rma.jsonl", {"rma-ev-1", "rma-ev-2", "rma-ev-3"}, {"no_identifier": 1, "unparsable_row": 2,
                                                                "mapping_conflict": 1}),
    "feedback": ("surveys.csv", {"sv-1", "sv-2"}, {"bad_value:feedback.nps": 1, "bad_value:identifiers.email": 1}),
    "web": ("web_events.jsonl", {"w-1", "w-2", "w-3"}, {"unknown_field:attributes.colour": 1}),
}


def test_every_channel_imports_good_rows_and_dead_letters_bad_ones(cem_settings):
    s = cem_settings
    kafka = KafkaConnection.from_settings(s)
    for channel, (name, good, bad) in CASES.items():
        rep = import_file(s, channel, FIX / name)
        assert (rep.published, rep.dead, rep.reasons) == (len(good), sum(bad.values()), bad), channel
    for channel, (_, good, _) in CASES.items():
        events = raw_events(kafka, RAW_TOPICS[channel])
        assert {e["event_id"] for e in events} == good
        assert all(e["channel"] == channel and e[channel] is not None for e in events)
    dead = dlq_records(kafka)
    assert Counter(h["cem-reason"] for h, _ in dead) == sum((Counter(c[2]) for c in CASES.values()), Counter())
    for headers, _ in dead:
        assert headers["cem-source-topic"].startswith("file:") and int(headers["cem-source-offset"]) >= 1
        assert " line " in headers["cem-detail"]

    # typed attributes and pseudonymized identifiers
    pz = Pseudonymizer(s.pseudonymization_key.get_secret_value().encode())
    store = {e["event_id"]: e for e in raw_events(kafka, RAW_TOPICS["store"])}
    assert store["pos-0003"]["store"]["amount_cents"] == 4599 and store["pos-0003"]["store"]["items"] == 2
    assert store["pos-0003"]["identifiers"]["email_hash"] == pz.email_hash("jane.doe@example.com")
    assert store["pos-0002"]["store"]["wait_seconds"] == 720
    phone = {e["event_id"]: e for e in raw_events(kafka, RAW_TOPICS["phone"])}
    assert phone["cdr-5"]["phone"]["resolved"] is False and phone["cdr-3"]["phone"]["hold_seconds"] == 420
    assert phone["cdr-1"]["identifiers"]["phone_hash"] == pz.phone_hash("+49301234567")

    # no raw email or phone number in any topic
    for topic in ALL_TOPICS:
        for m in read_topic(kafka, topic):
            blob = (m.value() or b"") + b"".join(v for _, v in (m.headers() or []))
            for needle in (b"jane.doe", b"Jane.Doe", b"leak@example.com", b"1234567", b"7654321"):
                assert needle not in blob, (topic, needle)
