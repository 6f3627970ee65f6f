"""Recovery playbooks: selection by rule, channel, value band and stage; validation naming the
entry and key; lifetime spend; escalation once per unrecovered moment."""
from __future__ import annotations

import json
import tomllib

import pytest

from cem.alerts import AlertBook
from cem.events import CHANNELS
from cem.lifecycle import Lifecycle
from cem.playbooks import DEFAULT_PLAYBOOKS, PlaybookError, load_playbooks, parse_playbooks
from cem.rules import load_rules

NAMES = frozenset(r.name for r in load_rules())
BOOKS = load_playbooks(None, NAMES, CHANNELS)


def doc(extra: str = "") -> dict:
    return tomllib.loads('[default]\naction = "follow_up"\ndetail = "Follow up"\n' + extra)


def test_the_shipped_playbooks_load_against_the_shipped_rules():
    assert BOOKS.playbooks and BOOKS.default.action == "follow_up"
    assert [b for b, _ in BOOKS.bands] == ["none", "low", "mid", "high", "vip"]


@pytest.mark.parametrize("spend,band", [(0, "none"), (1, "low"), (19_999, "low"), (20_000, "mid"),
                                        (150_000, "high"), (10 ** 9, "vip")])
def test_value_band_is_the_highest_floor_reached(spend, band):
    assert BOOKS.band(spend) == band


def test_selection_by_rule_channel_value_and_stage_first_match_wins():
    vip = BOOKS.select("long_hold", "phone", 600_000, "loyal")
    assert (vip.action, vip.playbook, vip.band) == ("callback", "vip_personal_callback", "vip")
    assert vip.within_ms == 3_600_000
    assert vip.escalate_to == "cx-leads"
    # the same rule and channel for a new low-spend customer: the contact-centre playbook
    low = BOOKS.select("long_hold", "phone", 500, "new")
    assert (low.action, low.playbook, low.band) == ("callback", "contact_centre_callback", "low")
    store = BOOKS.select("item_unavailable", "store", 50_000, "active")
    assert (store.action, store.escalate_to) == ("escalate_store_manager", "store-managers")
    voucher = BOOKS.select("item_unavailable", "store", 0, "new")
    assert (voucher.action, voucher.voucher_cents) == ("voucher", 1000)
    assert BOOKS.select("no_refund", "returns", 0, None).action == "expedite_refund"
    assert BOOKS.select("repeat_contact", "web", 0, "at_risk").action == "callback"
    # rage clicks of a customer who never bought: nothing matches, the default applies
    default = BOOKS.select("rage_click", "web", 0, "new")
    assert (default.action, default.playbook, default.band) == ("follow_up", "default", "none")


@pytest.mark.parametrize("text,where,key", [
    ('[[playbook]]\nname = "a"\naction = "x"\n', "playbook[0] 'a'", "detail"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nrule = "nope"\n', "playbook[0] 'a'", "rule"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nchannel = ["web", "fax"]\n', "playbook[0] 'a'", "channel"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nvalue = "gold"\n', "playbook[0] 'a'", "value"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nstage = "sleepy"\n', "playbook[0] 'a'", "stage"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nwithin = "soon"\n', "playbook[0] 'a'", "within"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\nvoucher_cents = -5\n', "playbook[0] 'a'", "voucher_cents"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\ncolour = "red"\n', "playbook[0] 'a'", "colour"),
    ('[[playbook]]\nname = "a"\naction = "x"\ndetail = "d"\n[[playbook]]\nname = "a"\naction = "y"\ndetail = "e"\n',
     "playbook[1] 'a'", "name"),
    ('[bands]\nlow = 100\n', "bands", "low"),
    ('[bands]\nnone = 0\nlow = "ten"\n', "bands", "low"),
    ('[escalation]\nsteps = 7\n', "escalation", "steps"),
    ('[extras]\nx = 1\n', "file", "extras"),
])
def test_a_broken_playbook_names_the_entry_and_the_key(text, where, key):
    with pytest.raises(PlaybookError) as err:
        parse_playbooks(doc(text), NAMES, CHANNELS)
    assert (err.value.where, err.value.key) == (where, key)
    assert f"{where}, key '{key}'" in str(err.value)


def test_missing_default_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(PlaybookError, match="default"):
        parse_playbooks({"playbook": []})
    bad = tmp_path / "p.toml"
    bad.write_text("[default\n")
    with pytest.raises(PlaybookError, match="not valid UTF-8 TOML"):
        load_playbooks(bad)
    with pytest.raises(PlaybookError, match="cannot read"):
        load_playbooks(tmp_path / "missing.toml")
    assert DEFAULT_PLAYBOOKS.exists()


def test_lifetime_spend_counts_purchases_and_orders_once_and_merges():
    life = Lifecycle()
    for et, amount in (("purchase", 1200), ("order_placed", 800), ("page_view", 999), ("purchase", None),
                       ("purchase", True), ("refund_issued", 500)):
        life.on_spend(et, amount)
    assert life.spend_cents == 2000
    other = Lifecycle(spend_cents=500)
    life.absorb(other)
    assert life.spend_cents == 2500
    assert Lifecycle.from_json(json.loads(json.dumps(life.to_json()))).spend_cents == 2500
    assert Lifecycle.from_json({"stage": "new", "since": 0, "last_touch": 0, "sessions": 1, "purchases": [],
                                "unrecovered": [], "open_moments": []}).spend_cents == 0  # older state


def test_escalation_severity_steps_and_team():
    assert BOOKS.escalation("medium", None) == ("cx-escalations", "high")
    assert BOOKS.escalation("critical", "cx-leads") == ("cx-leads", "critical")


def _book_with_alert():
    book = AlertBook()
    a, pages = book.on_moment("repeat_contact", "m1", 1000, 5, channel="phone", team="customer-care",
                              severity="high", delivery=["topic", "webhook"], recovery="open",
                              action="callback", action_detail="Call back", value_band="mid",
                              lifecycle_stage="active", escalate_to=None)
    return book, a, pages


def test_an_unrecovered_moment_escalates_the_alert_exactly_once():
    book, a, pages = _book_with_alert()
    assert pages and a.action == "callback" and a.revision == 1
    book.on_recovery("repeat_contact", "m1", "unrecovered", 2000)
    team, severity = BOOKS.escalation(a.severity, a.escalate_to)
    e = book.escalate("repeat_contact", "m1", team, severity, 2000)
    assert e is not None
    assert (e.team, e.severity, e.revision, e.actor) == ("cx-escalations", "critical", 2, "escalation")
    assert e.action == "callback"  # the recommendation stays with it
    # again (the same transition re-derived, or a replay of the restored state): nothing
    assert book.escalate("repeat_contact", "m1", team, severity, 2000) is None
    back = AlertBook.from_json(json.loads(json.dumps(book.to_json())))
    assert back.escalate("repeat_contact", "m1", team, severity, 2000) is None
    assert back.alerts["repeat_contact"].revision == 2


def test_no_escalation_for_a_resolved_alert_or_an_older_moment():
    book, a, _ = _book_with_alert()
    book.act(a.alert_id, "resolve", "ann", "refunded", 1500)
    assert book.escalate("repeat_contact", "m1", "cx-escalations", "critical", 2000) is None
    book2, _, _ = _book_with_alert()
    book2.on_moment("repeat_contact", "m2", 3000, 6, recovery="open")
    assert book2.escalate("repeat_contact", "m1", "cx-escalations", "critical", 4000) is None


def test_alert_state_without_action_fields_still_loads():
    old = {"repeat_contact": {"alert_id": "a", "rule": "repeat_contact", "moment_id": "m1"}}
    a = AlertBook.from_json(old).alerts["repeat_contact"]
    assert a.action == "" and a.escalated is None


def test_webhook_type_of_an_escalation():
    from cem.webhooks import event_type, payload
    book, a, _ = _book_with_alert()
    e = book.escalate("repeat_contact", "m1", "cx-escalations", "critical", 2000)
    row = {"alert_id": e.alert_id, "status": e.status, "revision": e.revision, "actor": e.actor,
           "action": e.action, "action_detail": e.action_detail}
    assert event_type(row) == "alert.escalated"
    body = json.loads(payload(row))
    assert body["alert"]["action"] == "callback" and body["type"] == "alert.escalated"
