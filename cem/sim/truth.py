"""Scoring cem against the simulator's ground truth (pure).

* identity: pairwise precision / recall / F1 over events — two events are a predicted pair when
  cem gave them the same customer (after following identity merges), a true pair when the
  simulator says they are one customer; computed from cluster contingency counts, not pairs;
* sessions: the share of true sessions that cem reproduced exactly (same set of events);
* journeys: the relative error of cem's journey count against journeys derived by the same
  definition from the true sessions of the true customers.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from cem.journeys import add_session
from cem.sessions import Session, Touch


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True)
class IdentityScore:
    precision: float
    recall: float
    f1: float
    events: int


def identity_score(true_customer: Mapping[str, str], predicted_customer: Mapping[str, str]) -> IdentityScore:
    events = [e for e in true_customer if e in predicted_customer]
    cells = Counter((predicted_customer[e], true_customer[e]) for e in events)
    pred = Counter(predicted_customer[e] for e in events)
    true = Counter(true_customer[e] for e in events)
    tp = sum(_pairs(n) for n in cells.values())
    pp = sum(_pairs(n) for n in pred.values())
    tpairs = sum(_pairs(n) for n in true.values())
    p = tp / pp if pp else 1.0
    r = tp / tpairs if tpairs else 1.0
    return IdentityScore(p, r, 2 * p * r / (p + r) if p + r else 0.0, len(events))


def resolve_aliases(customer: str, aliases: Mapping[str, str]) -> str:
    seen = set()
    while customer in aliases and customer not in seen:
        seen.add(customer)
        customer = aliases[customer]
    return customer


def session_accuracy(true_sessions: Mapping[str, frozenset[str]], predicted: Iterable[frozenset[str]]) -> float:
    pred = set(predicted)
    if not true_sessions:
        return 1.0
    return sum(1 for s in true_sessions.values() if s in pred) / len(true_sessions)


def true_journeys(truth_events: Iterable[Mapping]) -> int:
    """Journeys by cem's definition over the simulator's true sessions and customers."""
    sessions: dict[tuple[str, str], list[Touch]] = defaultdict(list)
    for t in truth_events:
        sessions[(t["customer"], t["session"])].append(
            Touch(t["at"], t["event_id"], t["event_type"], t["channel"], t["session"],
                  None, {"resolved": t.get("resolved", False)}))
    by_customer: dict[str, list[Session]] = defaultdict(list)
    for (customer, sid), touches in sessions.items():
        touches.sort(key=lambda x: (x.at, x.event_id))
        by_customer[customer].append(Session(sid, touches[0].channel, sid, touches))
    count = 0
    for customer, ss in by_customer.items():
        current = None
        for s in sorted(ss, key=lambda s: (s.started_at, s.session_id)):
            current, closed = add_session(current, customer, s)
            count += len(closed)
        if current is not None:
            count += 1
    return count


@dataclass(frozen=True)
class RuleScore:
    rule: str
    truth: int
    detected: int
    matched_truth: int
    matched_detected: int

    @property
    def precision(self) -> float:
        return self.matched_detected / self.detected if self.detected else 1.0

    @property
    def recall(self) -> float:
        return self.matched_truth / self.truth if self.truth else 1.0


def moment_scores(truth: Iterable[Mapping], detected: Iterable[tuple[str, list[str], str]]
                  ) -> tuple[dict[str, RuleScore], float, int]:
    """Per-rule precision/recall (a detection matches a true moment of the same rule when their
    evidence shares an event) and recovery-status accuracy over matched moments whose true
    status is settled (recovered or unrecovered). Returns (scores, accuracy, compared)."""
    truth = list(truth)
    detected = list(detected)
    by_event: dict[tuple[str, str], int] = {}
    for i, m in enumerate(truth):
        for e in m["evidence"]:
            by_event[(m["rule"], e)] = i
    matched_truth: dict[int, int] = {}
    matched_det = set()
    for j, (rule, evidence, _status) in enumerate(detected):
        hit = next((by_event[(rule, e)] for e in evidence if (rule, e) in by_event), None)
        if hit is not None:
            matched_det.add(j)
            matched_truth.setdefault(hit, j)
    rules = sorted({m["rule"] for m in truth} | {d[0] for d in detected})
    scores = {}
    for r in rules:
        t_idx = [i for i, m in enumerate(truth) if m["rule"] == r]
        d_idx = [j for j, d in enumerate(detected) if d[0] == r]
        scores[r] = RuleScore(r, len(t_idx), len(d_idx), sum(1 for i in t_idx if i in matched_truth),
                              sum(1 for j in d_idx if j in matched_det))
    settled = [(truth[i], detected[j]) for i, j in matched_truth.items()
               if truth[i].get("status", "recovered" if truth[i]["recovered"] else "unrecovered") != "open"]
    right = sum(1 for t, d in settled
                if (t.get("status") or ("recovered" if t["recovered"] else "unrecovered")) == d[2])
    return scores, (right / len(settled) if settled else 1.0), len(settled)
