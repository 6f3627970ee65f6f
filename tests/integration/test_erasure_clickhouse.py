"""Landing's erasure against real embedded ClickHouse (chdb, every migration applied): the
customer's rows go from every table — by customer id, merged-away ids and identifier digests —
other customers' stay, the audit row holds counts and digests only, and a replay changes nothing."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from cem.privacy import Erasure, ErasureRequest
from cem.sinks.clickhouse.client import connect
from cem.sinks.clickhouse.migrations import apply
from cem.sinks.erasure import Eraser

pytestmark = pytest.mark.integration
ALICE, ALICE_OLD, BOB = "cus-00000000000000a1", "cus-00000000000000a0", "cus-00000000000000b0"


def tp(eid: str, customer: str, anon: str | None, login: str | None) -> str:
    ids = f"({_s(anon)}, NULL, {_s(login)}, NULL, NULL, NULL, NULL)"
    return (f"('{eid}', 'page_view', 'web', now64(3), now64(3), 'test', {ids}, "
            f"('{customer}', false, 0))")


def _s(v: str | None) -> str:
    return "NULL" if v is None else f"'{v}'"


def test_every_table_is_cleaned_and_the_audit_row_holds_no_identifier(tmp_path):
    c = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        apply(c)
        c.command("INSERT INTO touchpoints (event_id, event_type, channel, occurred_at, received_at, source, "
                  "identifiers, cem) VALUES " + ", ".join([
                      tp("a1", ALICE, "anon-a", "C-ALICE"), tp("a0", ALICE_OLD, "anon-a0", None),
                      # resolved to someone else (a refused link), but it carries her login
                      tp("x1", BOB, None, "C-ALICE"), tp("b1", BOB, "anon-b", "C-BOB")]))
        for table, cols, rows in [
            ("sessions", "session_id, customer_id, channel, subject, status, version",
             [("s1", ALICE, "web", "anon-a", "closed", 1), ("s2", BOB, "web", "anon-a0", "closed", 1),
              ("s3", BOB, "web", "anon-b", "closed", 1)]),
            ("journeys", "journey_id, customer_id, version", [("j1", ALICE_OLD, 1), ("j2", BOB, 1)]),
            ("negative_moments", "moment_id, customer_id, version", [("m1", ALICE, 1), ("m2", BOB, 1)]),
            ("alerts", "alert_id, customer_id, version", [("al1", ALICE, 1), ("al2", BOB, 1)]),
            ("customer_lifecycle", "customer_id, stage, reason, version",
             [(ALICE, "active", "x", 1), (ALICE_OLD, "merged", f"merged into {ALICE}", 2), (BOB, "new", "x", 1)]),
            ("identity_merges", "merge_id, winner, loser, status, moved",
             [("g1", ALICE, ALICE_OLD, "merged", ["anonymous_id:anon-a0"]),
              ("g2", BOB, "customer_id:C-ALICE", "refused", []), ("g3", BOB, "cus-00000000000000b1", "merged", [])]),
        ]:
            c.insert(table, [list(r) for r in rows], column_names=[x.strip() for x in cols.split(",")])

        req = ErasureRequest.new("customer_id:C-ALICE", "dpo", int(datetime.now(timezone.utc).timestamp() * 1000))
        ids = {"customer_id:C-ALICE", "anonymous_id:anon-a", "anonymous_id:anon-a0"}
        e = Erasure.of(req, [ALICE, ALICE_OLD], ids, req.erasure_id)
        deleted = Eraser(c).apply(e)
        assert deleted == {"touchpoints": 3, "sessions": 2, "journeys": 1, "negative_moments": 1, "alerts": 1,
                           "customer_lifecycle": 2, "customers": 2, "identity_merges": 2}
        left = {t: [r[0] for r in c.query(f"SELECT formatRow('JSONEachRow', *) FROM {t}").result_rows]
                for t in deleted}
        for table, rows in left.items():
            assert rows, table  # Bob's rows stay
            assert not any(x in r for r in rows for x in ("ALICE", "anon-a", ALICE, ALICE_OLD)), (table, rows)
        audits = c.query("SELECT formatRow('JSONEachRow', *) FROM privacy_erasures").result_rows
        [audit] = [json.loads(r[0]) for r in audits]
        assert audit["status"] == "erased" and audit["identifiers_removed"] == 3 and audit["profiles_removed"] == 2
        assert int(audit["rows_deleted"]["touchpoints"]) == 3  # (64-bit integers come quoted in JSON)
        assert not any(x in json.dumps(audit) for x in ("ALICE", "anon-a", ALICE, ALICE_OLD))

        # the pack's audit trail
        from cem.sinks.queries import get, run
        q = get("erasures")
        columns, rows = run(c, q, q.bind({}))
        [trail] = [dict(zip(columns, r, strict=True)) for r in rows]
        assert trail["erasure_id"] == req.erasure_id and trail["rows_deleted"] == sum(deleted.values())

        # replayed (landing restarted before committing it): nothing more to delete, first row kept
        assert set(Eraser(c, clock=lambda: 9.0).apply(e).values()) == {0}
        assert c.query("SELECT count(), max(completed_at) FROM privacy_erasures").result_rows[0][0] == 1
    finally:
        c.close()
