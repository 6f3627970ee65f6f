"""Customer lifecycle transitions (pure), each with its reason."""
from __future__ import annotations

from cem.lifecycle import DAY, LOST_AFTER_MS, Lifecycle


def stages(changes):
    return [c.stage for c in changes]


def touch(life, event_type, at, positive=False, nps=None, new_session=False):
    return life.on_touch(event_type, at, positive, nps, new_session)


def test_new_active_satisfied_loyal_advocate():
    life = Lifecycle()
    assert stages(touch(life, "page_view", 0, new_session=True)) == ["new"]
    assert stages(touch(life, "page_view", DAY, new_session=True)) == ["active"]
    assert life.stage == "active" and life.since == DAY
    c = touch(life, "survey_response", 2 * DAY, positive=True, nps=9)
    assert stages(c) == ["satisfied"] and "NPS 9" in c[0].reason
    touch(life, "purchase", 3 * DAY, positive=True)
    touch(life, "purchase", 4 * DAY, positive=True)
    c = touch(life, "purchase", 5 * DAY, positive=True)
    assert stages(c) == ["loyal"] and c[0].reason.startswith("3 purchases in 90 days")
    c = touch(life, "survey_response", 6 * DAY, positive=True, nps=10)
    assert stages(c) == ["advocate"] and c[0].previous == "loyal"


def test_first_purchase_activates_at_once():
    life = Lifecycle()
    assert stages(touch(life, "purchase", 0, positive=True)) == ["new", "active", "satisfied"]


def test_unrecovered_moment_puts_at_risk_recovery_wins_back_and_silence_loses():
    life = Lifecycle()
    touch(life, "purchase", 0, positive=True)
    assert life.stage == "satisfied"
    assert life.on_moment("m1", "payment_failed", "open", DAY) == []  # one open moment is not yet a risk
    c = life.on_moment("m1", "payment_failed", "unrecovered", 3 * DAY)
    assert stages(c) == ["at_risk"] and "payment_failed not recovered" in c[0].reason
    life.on_moment("m2", "long_hold", "open", 4 * DAY)
    c = life.on_moment("m2", "long_hold", "recovered", 5 * DAY)
    assert stages(c) == ["satisfied"] and c[0].reason == "won back: recovered from long_hold"
    # detractor, then nothing for 60 days: lost; a return makes them active again
    assert stages(touch(life, "survey_response", 6 * DAY, nps=3)) == ["at_risk"]
    assert life.next_deadline() == 6 * DAY + LOST_AFTER_MS
    assert life.on_watermark(6 * DAY + LOST_AFTER_MS - 1) == []
    assert stages(life.on_watermark(6 * DAY + LOST_AFTER_MS)) == ["lost"]
    c = touch(life, "page_view", 70 * DAY)
    assert stages(c) == ["active"] and c[0].reason.startswith("returned after 64 days")


def test_two_open_moments_at_once_are_a_risk_and_loyalty_needs_a_clean_quarter():
    life = Lifecycle()
    touch(life, "purchase", 0, positive=True)
    life.on_moment("m1", "rage_click", "open", DAY)
    assert stages(life.on_moment("m2", "payment_failed", "open", DAY)) == ["at_risk"]
    life.on_moment("m1", "rage_click", "unrecovered", 2 * DAY)
    assert stages(life.on_moment("m2", "payment_failed", "recovered", 3 * DAY)) == ["satisfied"]
    for d in (4, 5, 6):
        touch(life, "purchase", d * DAY, positive=True)
    assert life.stage == "satisfied"  # an unrecovered moment within 90 days blocks loyalty


def test_merge_and_json_round_trip():
    a, b = Lifecycle(), Lifecycle()
    touch(a, "page_view", 0, new_session=True)
    touch(b, "purchase", DAY, positive=True)
    a.absorb(b)
    assert a.stage == "new" and a.purchases == [DAY] and a.last_touch == DAY and a.sessions == 1
    assert Lifecycle.from_json(a.to_json()) == a
    empty = Lifecycle()
    empty.absorb(b)
    assert empty.stage == b.stage
