from datetime import datetime, timezone

import pytest

from cem.connectors.mapping import parse_time, to_touchpoint
from cem.connectors.pseudonymize import Pseudonymizer, normalize_email, normalize_phone, redact_pii
from cem.events import Rejection

NOW = 1_795_000_000_000
PZ = Pseudonymizer(b"k")


def tp(obj, channel="web"):
    return to_touchpoint(obj, default_channel=channel, source="test", now_ms=NOW,
                         horizon_ms=400 * 86_400_000, pseudonymizer=PZ)


def test_raw_email_and_phone_are_hashed_and_dropped():
    ev = tp({"event_type": "login", "occurred_at": NOW - 1000,
             "identifiers": {"email": " Jane.Doe@Example.com", "phone": "030 1234567", "anonymous_id": "a"}})
    assert isinstance(ev, dict)
    assert ev["identifiers"]["email_hash"] == PZ.email_hash("jane.doe@example.com")
    assert ev["identifiers"]["phone_hash"] == PZ.phone_hash("+49301234567")
    assert "email" not in ev["identifiers"] and "phone" not in ev["identifiers"]
    assert "jane" not in repr(ev).lower() and "1234567" not in repr(ev)


@pytest.mark.parametrize("obj, reason", [
    ([1], "not_an_object"),
    ({"event_type": "search", "identifiers": {"anonymous_id": "a"}}, "missing_field:occurred_at"),
    ({"event_type": "search", "occurred_at": "2026-11-24T13:00:00", "identifiers": {"anonymous_id": "a"}},
     "missing_field:occurred_at"),  # no time zone
    ({"event_type": "search", "occurred_at": NOW, "identifiers": {"ssn": "1"}}, "unknown_field:identifiers.ssn"),
    ({"event_type": "search", "occurred_at": NOW, "identifiers": {"email": "nope"}}, "bad_value:identifiers.email"),
    ({"event_type": "click", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"}, "attributes": {"x": "far"}},
     "bad_type:attributes.x"),
    ({"event_type": "click", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"}, "attributes": {"colour": 1}},
     "unknown_field:attributes.colour"),
    ({"event_type": "search", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"},
      "attributes": {"query": "x" * 5000}}, "too_long:attributes.query"),
    ({"event_type": "search", "occurred_at": float("nan"), "identifiers": {"anonymous_id": "a"}},
     "missing_field:occurred_at"),
    ({"event_type": "survey_response", "channel": "feedback", "occurred_at": NOW, "identifiers": {"customer_id": "c"},
      "attributes": {"nps": 11}}, "bad_value:feedback.nps"),
    ({"event_type": "search", "channel": "fax", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"}},
     "unknown_channel"),
])
def test_each_bad_field_is_named(obj, reason):
    res = tp(obj)
    assert isinstance(res, Rejection) and res.reason == reason, res


def test_iso_and_epoch_times():
    expected = int(datetime(2026, 11, 24, 13, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_time("2026-11-24T13:00:00Z") == expected
    assert parse_time("2026-11-24T14:00:00+01:00") == expected
    assert parse_time(expected) == parse_time(str(expected)) == expected
    assert parse_time(True) is None and parse_time("yesterday") is None


@pytest.mark.parametrize("raw, e164", [("+49 30 1234567", "+49301234567"), ("0049-30-1234567", "+49301234567"),
                                        ("030 1234567", "+49301234567"), ("(030) 123-4567", "+49301234567")])
def test_phone_normalization(raw, e164):
    assert normalize_phone(raw) == e164


def test_email_normalization_and_keyed_hash():
    assert normalize_email("  A@B.CO ") == "a@b.co"
    assert Pseudonymizer(b"k1").email_hash("a@b.co") != Pseudonymizer(b"k2").email_hash("a@b.co")


def test_redaction_removes_emails_and_phones_everywhere():
    out = redact_pii(b'{"email":"x@y.de","note":"call +49 30 1234567 or z@w.com","ts":1795957200000}')
    assert b"x@y.de" not in out and b"z@w.com" not in out and b"1234567" not in out
    assert b"1795957200000" in out
