"""Contact on every channel: the catalogue, the touch a contact becomes, and repeat_contact over
any mix of channels (same order or same topic within 7 days), one moment with every contact as
evidence, recovered only by a resolution."""
from __future__ import annotations

import json
import random
from pathlib import Path

from cem.detect import Detector, is_positive
from cem.events import CONTACT_ENDS, CONTACTS, EVENT_TYPES, validate
from cem.rules import load_rules
from cem.schemas.compat import check_backward
from cem.sessions import subject_of, touch_of

RULES = load_rules()
BY = {r.name: r for r in RULES}
BY_NAME = {r.name: r for r in RULES}
H, D = 3_600_000, 86_400_000
NOW = 1_790_000_000_000


def ev(eid, et, ch, at, order=None, topic=None, case=None, resolved=None, **attrs):
    contact = {k: v for k, v in (("topic", topic), ("case_id", case), ("resolved", resolved)) if v is not None}
    return {"event_id": eid, "event_type": et, "channel": ch, "occurred_at": at, "received_at": at,
            "source": "test", "identifiers": {"customer_id": "c1", **({"order_id": order} if order else {})},
            "store_id": "store-01" if ch == "store" else None, ch: attrs, "contact": contact or None}


def run(events, wm=None):
    d = Detector()
    rules = [BY["repeat_contact"]]
    new_all, changed_all = [], []
    for e in events:
        new, changed = d.on_touch(rules, "c1", touch_of(e))
        new_all += new
        changed_all += changed
    if wm is not None:
        new, changed = d.on_watermark(BY_NAME, "c1", wm)
        new_all += new
        changed_all += changed
    return d, new_all, changed_all


def test_every_contact_type_is_in_the_catalogue_and_validates():
    types = {t for ts in EVENT_TYPES.values() for t in ts}
    assert CONTACTS <= types and CONTACT_ENDS <= types
    for e in (ev("a", "contact_form_submitted", "web", NOW, "o1", "delivery"),
              ev("b", "email_received", "email", NOW, "o1", "delivery", thread_id="t1"),
              ev("c", "service_desk_visit", "store", NOW, "o1", "delivery", resolved=True),
              ev("d", "chat_ended", "web", NOW, resolved=False)):
        assert validate(e, NOW, 30 * D) is None, e
    assert validate(ev("e", "email_received", "web", NOW), NOW, 30 * D).reason == "unknown_event_type"


def test_a_contact_carries_its_topic_and_resolution_and_a_case_is_its_own_subject():
    t = touch_of(ev("a", "chat_ended", "web", NOW, "o1", "refund", case="k9", resolved=True))
    assert t.attrs["topic"] == "refund" and t.attrs["_order_id"] == "o1" and t.subject == "case:k9"
    assert is_positive(t)
    assert not is_positive(touch_of(ev("b", "chat_ended", "web", NOW, resolved=False)))
    assert not is_positive(touch_of(ev("c", "contact_form_submitted", "web", NOW, resolved=True)))
    # a call keeps its call_id subject and its own resolved flag
    call = ev("d", "call_ended", "phone", NOW, case="k9", resolved=False, call_id="call-1", resolved_=None)
    call["phone"] = {"call_id": "call-1", "resolved": True}
    assert subject_of(call) == "call-1" and touch_of(call).attrs["resolved"] is True
    assert subject_of(ev("e", "email_received", "email", NOW, thread_id="th-1")) == "th-1"


def test_call_then_web_form_then_service_desk_about_one_order_is_one_moment_with_three_contacts():
    contacts = [ev("call", "call_started", "phone", NOW, "o1", "delivery", call_id="call-1"),
                ev("form", "contact_form_submitted", "web", NOW + 1 * D, "o1", "where is it"),
                ev("desk", "service_desk_visit", "store", NOW + 2 * D, "o1", resolved=False)]
    d, new, changed = run(contacts, wm=NOW + 2 * D + 7 * D)
    assert [m.rule for m in new] == ["repeat_contact"]
    assert new[0].evidence == ["call", "form"]
    grown = [m for m in changed if m.status == "open"]
    assert grown and grown[-1].moment_id == new[0].moment_id and grown[-1].evidence == ["call", "form", "desk"]
    final = [m for m in changed if m.status != "open"]
    assert len(final) == 1 and final[0].status == "unrecovered" and final[0].evidence == ["call", "form", "desk"]


def test_any_arrival_order_gives_one_moment_with_all_three_contacts():
    contacts = [ev("call", "call_started", "phone", NOW, "o1", call_id="call-1"),
                ev("mail", "email_received", "email", NOW + 1 * D, "o1", thread_id="t"),
                ev("desk", "service_desk_visit", "store", NOW + 2 * D, "o1")]
    for seed in range(6):
        shuffled = contacts[:]
        random.Random(seed).shuffle(shuffled)
        _, new, changed = run(shuffled)
        assert len(new) == 1
        ids = {m.moment_id for m in new + changed}
        assert len(ids) == 1
        last = (changed or new)[-1]
        assert sorted(last.evidence) == ["call", "desk", "mail"]
        # the pair that first fills the window (and so the id) depends on arrival order; every
        # order yields exactly one moment holding all three contacts


def test_same_topic_without_an_order_is_a_repeat_and_different_topics_are_not():
    _, new, _ = run([ev("a", "chat_started", "web", NOW, topic="refund"),
                     ev("b", "email_received", "email", NOW + 3 * D, topic="refund")])
    assert [m.evidence for m in new] == [["a", "b"]]
    _, new, _ = run([ev("a", "chat_started", "web", NOW, topic="refund"),
                     ev("b", "email_received", "email", NOW + 3 * D, topic="delivery")])
    assert not new
    # an order-less contact on the topic of an order's contact: same topic, one moment
    _, new, _ = run([ev("a", "call_started", "phone", NOW, "o1", "refund", call_id="c"),
                     ev("b", "email_received", "email", NOW + 1 * D, topic="refund")])
    assert len(new) == 1 and new[0].evidence == ["a", "b"]


def test_contacts_more_than_seven_days_apart_are_not_a_repeat():
    _, new, _ = run([ev("a", "call_started", "phone", NOW, "o1", call_id="c"),
                     ev("b", "service_desk_visit", "store", NOW + 8 * D, "o1")])
    assert not new


def test_a_resolution_recovers_the_moment_and_a_later_contact_does_not_join_it():
    contacts = [ev("a", "call_started", "phone", NOW, "o1", call_id="c"),
                ev("b", "chat_started", "web", NOW + 1 * D, "o1"),
                ev("r", "chat_ended", "web", NOW + 1 * D + H, "o1", resolved=True)]
    d, new, changed = run(contacts)
    assert len(new) == 1 and [m.status for m in changed] == ["recovered"]
    later, grown = d.on_touch([BY["repeat_contact"]], "c1",
                              touch_of(ev("c", "email_received", "email", NOW + 2 * D, "o1")))
    assert not grown  # the moment is closed: the new contact counts afresh
    assert [m.evidence for m in later] == [["b", "c"]]


def test_replayed_contact_does_not_grow_the_evidence_twice():
    d, new, _ = run([ev("a", "call_started", "phone", NOW, "o1", call_id="c"),
                     ev("b", "chat_started", "web", NOW + D, "o1")])
    again, grown = d.on_touch([BY["repeat_contact"]], "c1", touch_of(ev("b", "chat_started", "web", NOW + D, "o1")))
    assert not again and not grown
    # state survives its JSON round trip (the changelog) with the grown evidence
    _, grown = d.on_touch([BY["repeat_contact"]], "c1", touch_of(ev("c", "email_received", "email", NOW + 2 * D, "o1")))
    back = Detector.from_json(json.loads(json.dumps(d.to_json())))
    assert list(back.open[0].evidence) == ["a", "b", "c"] == grown[0].evidence


def test_schema_v4_reads_everything_written_with_v3():
    root = Path(__file__).resolve().parents[2] / "cem" / "schemas" / "history"
    if not root.exists():
        root = Path(__file__).resolve().parents[2] / "schemas" / "history"
    v3 = json.loads((root / "touchpoint-v3.avsc").read_text())
    v4 = json.loads((root / "touchpoint-v4.avsc").read_text())
    assert check_backward(v4, v3).compatible
    assert {"email", "contact"} <= {f["name"] for f in v4["fields"]}
    assert all(f.get("default", "x") is None for f in v4["fields"] if f["name"] in ("email", "contact"))


def test_simulated_repeat_contacts_mix_channels_and_the_detector_finds_exactly_the_truth():
    from collections import Counter

    from cem.rules import by_event_type
    from cem.sim.simulator import SimConfig, Simulator
    sim = Simulator(SimConfig(customers=300, days=14, seed=11))
    events = list(sim.run())
    truth = [m for m in sim.truth.moments if m["rule"] == "repeat_contact"]
    customer = {t["event_id"]: t["customer"] for t in sim.truth.events}
    kinds = {e["event_id"]: (e["channel"], e["event_type"]) for e in events}
    assert len({kinds[x] for m in truth for x in m["evidence"]}) >= 4  # calls, forms, chats, emails, desk
    assert Counter(len(m["evidence"]) for m in truth)[3] > 0  # some with a third contact
    by, detectors, found = by_event_type(RULES), {}, {}
    for e in sorted(events, key=lambda e: (e["occurred_at"], e["event_id"])):
        d = detectors.setdefault(customer[e["event_id"]], Detector())
        t = touch_of(e)
        new, changed = d.on_touch(by.get(t.event_type, ()), customer[e["event_id"]], t)
        found.update({m.moment_id: m for m in new + changed if m.rule == "repeat_contact"})
    assert sorted(sorted(m.evidence) for m in found.values()) == sorted(sorted(m["evidence"]) for m in truth)


def _tp(obj, channel):
    from cem.connectors.mapping import to_touchpoint
    from cem.connectors.pseudonymize import Pseudonymizer
    return to_touchpoint(obj, default_channel=channel, source="t", now_ms=NOW, horizon_ms=30 * D,
                         pseudonymizer=Pseudonymizer(b"k" * 32))


def test_collector_and_importer_objects_carry_the_contact_and_bad_contact_fields_are_named():
    ok = _tp({"event_type": "email_received", "occurred_at": NOW, "identifiers": {"email": "a@b.example"},
              "attributes": {"thread_id": "th1"}, "contact": {"topic": "refund", "resolved": "no"}}, "email")
    assert ok["contact"] == {"topic": "refund", "resolved": False} and ok["email"] == {"thread_id": "th1"}
    bad = _tp({"event_type": "chat_started", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"},
               "contact": {"mood": "angry"}}, "web")
    assert bad.reason == "unknown_field:contact.mood"
    assert _tp({"event_type": "chat_started", "occurred_at": NOW, "identifiers": {"anonymous_id": "a"},
                "contact": "refund"}, "web").reason == "bad_type:contact"


def test_importer_default_mappings_place_contact_columns():
    from cem.connectors.importers import load_mapping, row_to_object
    row = {"message_id": "m1", "timestamp": "2026-12-01T10:00:00Z", "from": "a@b.example", "order_id": "o1",
           "thread_id": "th", "topic": "delivery", "ticket_id": "T-9", "resolved": "false"}
    obj = row_to_object(row, load_mapping("email", None), set())
    assert obj["contact"] == {"topic": "delivery", "case_id": "T-9", "resolved": "false"}
    assert obj["event_type"] == "email_received" and obj["identifiers"]["order_id"] == "o1"
    desk = row_to_object({"type": "service_desk_visit", "timestamp": "1", "store": "s1", "topic": "refund",
                          "order_id": "o2"}, load_mapping("store", None), set())
    assert desk["contact"] == {"topic": "refund"} and desk["identifiers"] == {"order_id": "o2"}


def test_segment_and_snowplow_contact_events():
    from cem.connectors import segment, snowplow
    ev = segment.to_native({"type": "track", "event": "Contact Form Submitted", "anonymousId": "a", "messageId": "m",
                            "properties": {"topic": "delivery", "order_id": "o1", "ticket_id": "T1"}}, NOW)
    assert ev["event_type"] == "contact_form_submitted" and ev["identifiers"]["order_id"] == "o1"
    assert ev["contact"] == {"topic": "delivery", "case_id": "T1"}
    end = segment.to_native({"type": "track", "event": "Chat Ended", "anonymousId": "a", "messageId": "m2",
                             "properties": {"resolved": True}}, NOW)
    assert end["event_type"] == "chat_ended" and end["contact"] == {"resolved": True}
    assert segment.to_native({"type": "page", "anonymousId": "a", "messageId": "m3"}, NOW).get("contact") is None
    se = snowplow.to_native({"e": "se", "eid": "e1", "duid": "d", "se_ca": "support", "se_ac": "chat_started",
                             "se_la": "refund", "se_pr": "o7"}, NOW)
    assert se["event_type"] == "chat_started" and se["contact"] == {"topic": "refund"}
    assert se["identifiers"]["order_id"] == "o7" and "element" not in se["attributes"]


def test_contacts_sharing_order_and_topic_raise_one_moment_and_the_cooldown_spans_both_groups():
    d, new, _ = run([ev("a", "call_started", "phone", NOW, "o1", "refund", call_id="c"),
                     ev("b", "email_received", "email", NOW + D, "o1", "refund")])
    assert [m.evidence for m in new] == [["a", "b"]]
    d.on_touch([BY["repeat_contact"]], "c1", touch_of(ev("r", "chat_ended", "web", NOW + D + 60_000, resolved=True)))
    # recovered; a contact ten minutes later opens nothing through either group (1 h cooldown)
    later, grown = d.on_touch([BY["repeat_contact"]], "c1",
                              touch_of(ev("c", "chat_started", "web", NOW + D + 600_000, "o1", "refund")))
    assert not later and not grown


def test_counts_restored_from_before_topics_carry_on_under_the_order_key():
    from cem.detect import CountHit
    d = Detector(counts={"repeat_contact|o1": [CountHit(NOW, "old-call", "phone")]})
    new, _ = d.on_touch([BY["repeat_contact"]], "c1", touch_of(ev("b", "chat_started", "web", NOW + D, "o1")))
    assert [m.evidence for m in new] == [["old-call", "b"]]
