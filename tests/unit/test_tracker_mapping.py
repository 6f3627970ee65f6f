"""Segment and Snowplow payloads → cem events (pure mapping; the wire is in tests/integration)."""
from __future__ import annotations

import base64
import json

import pytest

from cem.connectors import segment, snowplow

NOW = 1_795_000_000_000


def test_segment_skew_correction_follows_segments_formula():
    msg = {"timestamp": "2026-11-25T10:00:00.000Z", "sentAt": "2026-11-25T10:00:05.000Z"}
    # receivedAt - (sentAt - timestamp): the device clock's error cancels out
    assert segment.event_time(msg, NOW) == NOW - 5_000
    assert segment.event_time({"originalTimestamp": "2026-11-25T10:00:00Z", "timestamp": "2030-01-01T00:00:00Z",
                               "sentAt": "2026-11-25T10:00:01Z"}, NOW) == NOW - 1_000
    assert segment.event_time({}, NOW) == NOW


@pytest.mark.parametrize("name,kind", sorted(segment.TRACK_EVENTS.items()))
def test_segment_spec_events_map_to_cem_types(name, kind):
    ev = segment.to_native({"type": "track", "event": name, "anonymousId": "a", "messageId": "m"}, NOW)
    assert ev["event_type"] == kind and ev["event_name"] == f"track:{name}" and ev["channel"] == "web"


def test_segment_unknown_track_is_custom_and_ids_map():
    ev = segment.to_native({"type": "track", "event": "Gift Wrapped", "userId": "u1", "messageId": "m1",
                            "context": {"traits": {"email": "A@B.C"}, "device": {"id": "d1"}},
                            "properties": {"orderId": 77}}, NOW)
    assert ev["event_type"] == "custom"
    assert ev["identifiers"] == {"customer_id": "u1", "email": "A@B.C", "device_id": "d1", "order_id": "77"}
    alias = segment.to_native({"type": "alias", "previousId": "anon-1", "userId": "u1", "messageId": "m2"}, NOW)
    assert alias["event_type"] == "identify" and alias["identifiers"] == {"anonymous_id": "anon-1", "customer_id": "u1"}


@pytest.mark.parametrize("msg,field", [
    ("text", "message"), ({"type": "x", "anonymousId": "a", "messageId": "m"}, "type"),
    ({"type": "page", "messageId": "m"}, "anonymousId"),
    ({"type": "track", "anonymousId": "a", "messageId": "m"}, "event"),
    ({"type": "page", "anonymousId": "a"}, "messageId")])
def test_segment_errors_name_the_field(msg, field):
    with pytest.raises(segment.SegmentError) as err:
        segment.to_native(msg, NOW)
    assert err.value.field == field


def test_snowplow_time_prefers_true_then_skew_corrected_device_time():
    assert snowplow.event_time({"ttm": "1000", "dtm": "5", "stm": "9"}, NOW) == 1000
    assert snowplow.event_time({"dtm": str(NOW + 3_600_000), "stm": str(NOW + 3_602_000)}, NOW) == NOW - 2_000
    assert snowplow.event_time({}, NOW) == NOW


def test_snowplow_self_describing_base64_and_structured_events():
    ue = {"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
          "data": {"schema": "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1",
                   "data": {"targetUrl": "https://shop/x", "elementId": "pay"}}}
    px = base64.urlsafe_b64encode(json.dumps(ue).encode()).decode().rstrip("=")
    ev = snowplow.to_native({"e": "ue", "eid": "e1", "duid": "d1", "ue_px": px}, NOW)
    assert ev["event_type"] == "click" and ev["attributes"]["element"] == "pay"
    se = snowplow.to_native({"e": "se", "eid": "e2", "uid": "u1", "se_ca": "shop", "se_ac": "purchase",
                             "se_va": "12.5", "tr_id": "o1"}, NOW)
    assert se["event_type"] == "order_placed" and se["attributes"]["amount_cents"] == 1250
    assert se["identifiers"] == {"customer_id": "u1", "order_id": "o1"}


@pytest.mark.parametrize("params,field", [
    ({"e": "zz", "eid": "e", "duid": "d"}, "e"), ({"e": "pv", "duid": "d"}, "eid"), ({"e": "pv", "eid": "e"}, "duid"),
    ({"e": "ue", "eid": "e", "duid": "d", "ue_px": "%%%"}, "ue_px"),
    ({"e": "ue", "eid": "e", "duid": "d", "ue_pr": "{"}, "ue_pr"),
    ({"e": "pv", "eid": "e", "duid": "d", "co": "[1]"}, "cx"), ({"e": "se", "eid": "e", "duid": "d"}, "se_ac")])
def test_snowplow_errors_name_the_field(params, field):
    with pytest.raises(snowplow.SnowplowError) as err:
        snowplow.to_native(params, NOW)
    assert err.value.field == field
