"""`cem report --truth DIR`: read ClickHouse, score against a simulator run's ground truth."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from cem.settings import Settings
from cem.sim.truth import identity_score, moment_scores, resolve_aliases, session_accuracy, true_journeys
from cem.sinks.clickhouse.client import connect_settings


def _jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def merge_aliases(client: Any) -> dict[str, str]:
    """Merged-away customer id -> the id it merged into (latest decision; chains are followed by
    `resolve_aliases`). `client`: a clickhouse-connect client."""
    return dict(client.query("SELECT loser, argMax(winner, decided_at) FROM identity_merges FINAL "
                             "WHERE status = 'merged' GROUP BY loser").result_rows)


def truth_report(settings: Settings, truth_dir: Path) -> dict[str, Any]:
    events = _jsonl(truth_dir / "truth_events.jsonl")
    client = connect_settings(settings)
    try:
        rows = client.query("SELECT event_id, customer_id FROM touchpoints FINAL").result_rows
        aliases = merge_aliases(client)
        sessions = client.query("SELECT event_ids FROM sessions FINAL WHERE is_deleted = 0").result_rows
        journeys = client.query("SELECT count() FROM journeys FINAL").result_rows[0][0]
        detected = client.query("SELECT rule, evidence, recovery_status FROM negative_moments FINAL").result_rows
    finally:
        client.close()
    predicted = {eid: resolve_aliases(cust, aliases) for eid, cust in rows}
    ident = identity_score({e["event_id"]: e["customer"] for e in events}, predicted)
    true_sessions: dict[str, set[str]] = defaultdict(set)
    for e in events:
        true_sessions[e["session"]].add(e["event_id"])
    acc = session_accuracy({k: frozenset(v) for k, v in true_sessions.items()}, (frozenset(r[0]) for r in sessions))
    tj = true_journeys(events)
    truth_moments = _jsonl(truth_dir / "truth_moments.jsonl")
    scores, recovery_acc, compared = moment_scores(truth_moments, detected)
    return {"events_truth": len(events), "events_landed": len(predicted), "identity_precision": ident.precision,
            "identity_recall": ident.recall, "identity_f1": ident.f1, "sessions_truth": len(true_sessions),
            "sessions_landed": len(sessions), "session_accuracy": acc, "journeys_truth": tj,
            "journeys_landed": journeys, "journey_count_error": abs(journeys - tj) / tj if tj else 0.0,
            "merges": len(aliases), "moments_truth": len(truth_moments), "moments_detected": len(detected),
            "recovery_accuracy": recovery_acc, "recovery_compared": compared,
            "rules": {r: {"truth": sc.truth, "detected": sc.detected, "precision": sc.precision, "recall": sc.recall}
                      for r, sc in scores.items()}}
