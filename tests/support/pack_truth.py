"""Expected answers of the analysts' query pack, computed from the simulator's ground truth
(truth_events.jsonl / truth_moments.jsonl) — never from ClickHouse or the queries themselves.
Journeys use cem's definition (cem.journeys.add_session) over the *true* sessions and customers."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from cem.events import CONTACT_ENDS
from cem.journeys import add_session
from cem.sessions import Session, Touch

DAY = 86_400_000
ORDERS = ("order_placed", "purchase")


def load(out: Path) -> tuple[list[dict], list[dict]]:
    events = [json.loads(line) for line in open(out / "truth_events.jsonl")]
    moments = [json.loads(line) for line in open(out / "truth_moments.jsonl")]
    return events, moments


def true_sessions(events: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by[e["session"]].append(e)
    for evs in by.values():
        evs.sort(key=lambda e: (e["at"], e["event_id"]))
    return by


def moments_per_1000_journeys(events: list[dict], moments: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """(channel, store) -> (journeys that had a session there, moments raised there)."""
    sessions = true_sessions(events)
    by_customer: dict[str, list[Session]] = defaultdict(list)
    where: dict[str, tuple[str, str]] = {}
    for sid, evs in sessions.items():
        touches = [Touch(e["at"], e["event_id"], e["event_type"], e["channel"], sid, e.get("store_id"),
                         {"resolved": e["resolved"]}) for e in evs]
        by_customer[evs[0]["customer"]].append(Session(sid, evs[0]["channel"], sid, touches))
        where[sid] = (evs[0]["channel"], next((e["store_id"] for e in evs if e.get("store_id")), ""))
    journeys: Counter = Counter()
    for customer, ss in by_customer.items():
        current, done = None, []
        for s in sorted(ss, key=lambda s: (s.started_at, s.session_id)):
            current, closed = add_session(current, customer, s)
            done += closed
        if current is not None:
            done.append(current)
        for j in done:
            for place in {where[sid] for sid in j.session_ids}:
                journeys[place] += 1
    store_of = {e["event_id"]: e.get("store_id") or "" for e in events}
    raised: Counter = Counter()
    for m in moments:
        store = next((store_of[x] for x in m["evidence"] if store_of.get(x)), "")
        raised[(m["channel"], store)] += 1
    return {k: (journeys[k], raised[k]) for k in journeys}


def recovery_by_rule(moments: list[dict]) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for m in moments:
        out[m["rule"]]["moments"] += 1
        out[m["rule"]][m["status"]] += 1
    return out


def contact_resolution(events: list[dict], within_days: int = 7) -> dict[str, Counter]:
    """channel -> contacts (events that close one, any channel), resolved, followed by another
    contact of the customer on any channel within `within_days`, resolved on first contact."""
    ends: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["event_type"] in CONTACT_ENDS:
            ends[e["customer"]].append(e)
    out: dict[str, Counter] = defaultdict(Counter)
    for cs in ends.values():
        cs.sort(key=lambda e: (e["at"], e["event_id"]))
        for i, c in enumerate(cs):
            again = i + 1 < len(cs) and cs[i + 1]["at"] <= c["at"] + within_days * DAY
            w = out[c["channel"]]
            w["contacts"] += 1
            w["resolved_on_contact"] += c["resolved"]
            w["followed_by_another"] += again
            w["first_contact_resolved"] += c["resolved"] and not again
    return out


def funnel(events: list[dict]) -> dict[str, tuple[int, int, int, int, int]]:
    """channel -> (sessions, searched, added_to_cart, checked_out, ordered), each step needing the earlier."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for evs in true_sessions(events).values():
        types = {e["event_type"] for e in evs}
        row = out[evs[0]["channel"]]
        steps = ["search" in types, "add_to_cart" in types, "checkout_started" in types, bool(types & set(ORDERS))]
        row[0] += 1
        reached = True
        for i, s in enumerate(steps):
            reached = reached and s
            row[i + 1] += reached
    return {k: tuple(v) for k, v in out.items()}


def recovery_impact(events: list[dict], moments: list[dict],
                    days: int = 30) -> dict[tuple[str, str, str], tuple[int, float, float]]:
    """(rule, channel, recovered|unrecovered) -> (moments, repurchase rate, churn rate)."""
    touches: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        touches[e["customer"]].append(e)
    groups: dict[tuple[str, str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for m in moments:
        if m["status"] not in ("recovered", "unrecovered"):
            continue
        after = [e for e in touches[m["customer"]] if m["at"] < e["at"] <= m["at"] + days * DAY]
        groups[(m["rule"], m["channel"], m["status"])].append(
            (any(e["event_type"] in ORDERS for e in after), not after))
    return {k: (len(v), sum(r for r, _ in v) / len(v), sum(c for _, c in v) / len(v)) for k, v in groups.items()}
