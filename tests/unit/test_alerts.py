"""Alert lifecycle per customer (pure): open → acknowledged → resolved, reopened on recurrence."""
from __future__ import annotations

from cem.alerts import AlertBook, alert_id

H = 3_600_000
ROUTE = dict(channel="web", store_id=None, team="care", severity="high", delivery=["topic"], recovery="open")


def test_first_moment_opens_and_pages_then_recurrence_only_counts_while_open():
    book = AlertBook()
    a, pages = book.on_moment("payment_failed", "m1", 0, 1000, **ROUTE, latency_ms=12.0)
    assert pages and (a.alert_id, a.status, a.revision, a.occurrences) == (alert_id("m1"), "open", 1, 1)
    assert a.latency_ms == 12.0 and a.team == "care"
    a, pages = book.on_moment("payment_failed", "m2", 2 * H, 2000, **ROUTE, latency_ms=30.0)
    assert not pages and (a.status, a.revision, a.occurrences, a.moment_id) == ("open", 1, 2, "m2")
    assert a.latency_ms == 12.0  # the page's latency stays the opening one
    assert book.on_moment("payment_failed", "m2", 2 * H, 3000, **ROUTE) == (a, False)  # replayed: no change


def test_ack_then_resolve_by_a_person_then_recurrence_reopens_and_pages_again():
    book = AlertBook()
    a, _ = book.on_moment("payment_failed", "m1", 0, 1000, **ROUTE)
    assert book.act(a.alert_id, "ack", "ana", "calling back", H).status == "acknowledged"
    assert book.act(a.alert_id, "ack", "ana", None, H) is None            # already acknowledged
    _, pages = book.on_moment("payment_failed", "m2", 2 * H, 2000, **ROUTE)
    assert not pages and a.status == "acknowledged" and a.occurrences == 2
    r = book.act(a.alert_id, "resolve", "ana", "refunded", 3 * H)
    assert (r.status, r.revision, r.actor, r.note) == ("resolved", 3, "ana", "refunded")
    assert book.act(a.alert_id, "ack", "bob", None, 3 * H) is None        # a resolved alert is not acked
    a2, pages = book.on_moment("payment_failed", "m3", 4 * H, 4000, **ROUTE)
    assert pages and a2.alert_id == a.alert_id and (a2.status, a2.revision, a2.occurrences) == ("open", 4, 3)
    assert a2.actor is None and a2.note is None
    assert book.act("unknown", "resolve", "x", None, 0) is None


def test_recovery_of_the_latest_moment_resolves_and_born_recovered_pages_nobody():
    book = AlertBook()
    a, _ = book.on_moment("nps", "m1", 0, 1000, **ROUTE)
    assert book.on_recovery("nps", "other-moment", "recovered", H) is None
    r = book.on_recovery("nps", "m1", "recovered", H)
    assert (r.status, r.actor, r.revision, r.recovery) == ("resolved", "recovery", 2, "recovered")
    assert book.on_recovery("nps", "m1", "recovered", H) is None          # no change twice
    b, pages = AlertBook().on_moment("nps", "m9", 0, 1000, **dict(ROUTE, recovery="recovered"))
    assert not pages and (b.status, b.actor, b.revision) == ("resolved", "recovery", 1)
    u = AlertBook()
    u.on_moment("nps", "m1", 0, 1000, **ROUTE)
    assert u.on_recovery("nps", "m1", "unrecovered", H).status == "open"  # recorded, still open


def test_merge_keeps_one_alert_per_rule_and_json_round_trips_and_prune_forgets_old_resolved():
    mine, theirs = AlertBook(), AlertBook()
    mine.on_moment("nps", "m1", 0, 2000, **ROUTE)
    theirs.on_moment("nps", "m0", 0, 1000, **ROUTE)
    theirs.on_moment("rage", "r1", 0, 1000, **ROUTE)
    mine.absorb(theirs)
    assert mine.alerts["nps"].moment_id == "m0" and mine.alerts["nps"].occurrences == 2  # earlier opened wins
    assert set(mine.alerts) == {"nps", "rage"}
    assert AlertBook.from_json(mine.to_json()).to_json() == mine.to_json()
    mine.act(mine.alerts["rage"].alert_id, "resolve", "ana", None, H)
    mine.prune(H + 8 * 24 * H)
    assert set(mine.alerts) == {"nps"}  # resolved and older than a week: forgotten; open ones stay
