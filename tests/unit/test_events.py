import pytest

from cem.events import CHANNELS, EVENT_TYPES, repair_received_at, validate
from cem.sim.generator import touchpoints

NOW = 1_790_000_000_000
HORIZON = 400 * 86_400_000


def good() -> dict:
    return next(touchpoints(1, start_ms=NOW - 60_000, channels=("web",)))


def test_generated_events_of_every_channel_are_valid():
    events = list(touchpoints(500, start_ms=NOW - 3_600_000))
    assert {e["channel"] for e in events} == set(CHANNELS)
    assert all(validate(e, NOW, HORIZON) is None for e in events)


@pytest.mark.parametrize("change, reason", [
    ({"event_id": ""}, "missing_field:event_id"),
    ({"event_id": "   "}, "missing_field:event_id"),
    ({"event_type": None}, "missing_field:event_type"),
    ({"channel": ""}, "missing_field:channel"),
    ({"source": ""}, "missing_field:source"),
    ({"channel": "fax"}, "unknown_channel"),
    ({"event_type": "refund_issued"}, "unknown_event_type"),
    ({"occurred_at": 0}, "missing_field:occurred_at"),
    ({"occurred_at": NOW + 24 * 3_600_000}, "future_timestamp"),
    ({"occurred_at": NOW - 401 * 86_400_000}, "too_old"),
    ({"occurred_at": 1_700_000_000}, "too_old"),  # seconds instead of milliseconds
    ({"identifiers": {"anonymous_id": None}}, "no_identifier"),
    ({"identifiers": {}}, "no_identifier"),
    ({"store": {"wait_seconds": 3}}, "attributes_mismatch"),
])
def test_each_bad_input_gets_its_specific_reason(change, reason):
    rejection = validate({**good(), **change}, NOW, HORIZON)
    assert rejection is not None
    assert rejection.reason == reason
    assert len(rejection.detail) > 20  # says what was wrong to a person


def test_clock_skew_within_23_hours_is_accepted():
    assert validate({**good(), "occurred_at": NOW + 22 * 3_600_000}, NOW, HORIZON) is None


def test_every_channel_has_event_types():
    assert set(EVENT_TYPES) == set(CHANNELS)
    assert all(EVENT_TYPES[c] for c in CHANNELS)


def test_an_int_attribute_beyond_32_bits_is_refused_not_forwarded():
    # Avro decoders read it (the varint is unbounded), but the encoder and ClickHouse refuse it:
    # forwarded, it stopped ingest (re-encoding raised) or a whole insert (passed through)
    ev = good()
    ev["web"] = dict(ev["web"] or {}, x=2 ** 40)
    rejection = validate(ev, NOW, HORIZON)
    assert rejection is not None and rejection.reason == "bad_value:web.x"
    ev["web"]["x"] = -(2 ** 31)
    assert validate(ev, NOW, HORIZON) is None


@pytest.mark.parametrize("received", [0, -(2 ** 63), 1_790_000_000, NOW + 24 * 3_600_000, 2 ** 62, None, "now"])
def test_a_receipt_time_that_cannot_be_one_is_set_to_the_clock_and_the_event_kept(received):
    # 0 (never set), a wrapped varint, seconds instead of ms, beyond the skew allowance, missing
    ev = {**good(), "received_at": received}
    assert repair_received_at(ev, NOW) is True
    assert ev["received_at"] == NOW
    assert validate(ev, NOW, HORIZON) is None


@pytest.mark.parametrize("received", [NOW, NOW - 30 * 86_400_000, NOW + 22 * 3_600_000, 946_684_800_000])
def test_a_plausible_receipt_time_is_kept(received):
    ev = {**good(), "received_at": received}
    assert repair_received_at(ev, NOW) is False
    assert ev["received_at"] == received


def test_every_int_attribute_of_the_schema_is_range_checked_within_32_bits():
    # Avro varints are unbounded: an int attribute without a range decodes beyond 32 bits and
    # makes ingest's encoder raise (a crash loop on the same record). A new int field in
    # schemas/touchpoint.avsc needs its entry in cem.events._RANGES.
    from cem.events import _RANGES
    from cem.schemas.registry import default_registry
    raw = default_registry().latest("touchpoint").raw
    checked = 0
    for field in raw["fields"]:
        if field["name"] not in CHANNELS:
            continue
        record = next(b for b in field["type"] if isinstance(b, dict))
        for attr in record["fields"]:
            if "int" in (attr["type"] if isinstance(attr["type"], list) else [attr["type"]]):
                low, high = _RANGES[field["name"]][attr["name"]]
                assert -2 ** 31 <= low <= high <= 2 ** 31 - 1, (field["name"], attr["name"])
                checked += 1
    assert checked == 10
