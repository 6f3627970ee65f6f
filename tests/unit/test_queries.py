"""The query pack's files, parameters and output formats (pure: no ClickHouse)."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from cem.sinks.queries import QueryError, get, load_pack, parse, render


def test_every_pack_query_is_documented_and_parameterized_server_side():
    pack = load_pack()
    assert len(pack) >= 7
    for q in pack.values():
        assert q.summary and q.sql.lstrip().upper().startswith(("SELECT", "WITH"))
        for p in q.params:
            assert "{" + f"{p.name}:" in q.sql, (q.name, p.name)  # bound by the server, never pasted


def test_defaults_relative_dates_and_clear_errors():
    q = parse("x", "-- summary: s\n-- param: since DateTime64(3) = now-7d\n-- param: who String\nSELECT 1")
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    assert q.bind({"who": "c1"}, now) == {"since": "2026-11-18 12:00:00", "who": "c1"}
    with pytest.raises(QueryError, match="needs --param who"):
        q.bind({}, now)
    with pytest.raises(QueryError, match="has no parameter nope"):
        q.bind({"who": "c", "nope": "1"}, now)
    with pytest.raises(QueryError, match="cem query --list"):
        get("no_such_query")
    with pytest.raises(ValueError, match="summary"):
        parse("y", "SELECT 1")


def test_render_table_csv_json():
    cols = ["rule", "moments", "at"]
    rows = [("rage_click", 12, datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)), ("long_hold", 3, None)]
    table = render(cols, rows, "table")
    lines = table.splitlines()
    assert lines[0].split() == cols and lines[-1] == "(2 rows)"
    assert lines[2].startswith("rage_click") and "12" in lines[2]
    as_csv = list(csv.reader(io.StringIO(render(cols, rows, "csv"))))
    assert as_csv[1] == ["rage_click", "12", "2026-11-25 08:00:00.000"]
    assert json.loads(render(cols, rows, "json"))[1] == {"rule": "long_hold", "moments": 3, "at": None}
    with pytest.raises(QueryError, match="--format"):
        render(cols, rows, "xml")
