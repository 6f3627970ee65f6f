"""The analysts' query pack: named, documented SQL files in `clickhouse/queries/NAME.sql`.

A file starts with comment lines: `-- summary: one line` (what `cem query --list` shows),
`-- param: NAME ClickHouseType [= default]` for each parameter, then free documentation. The SQL
uses ClickHouse server-side parameters (`{name:Type}`), so values are never pasted into SQL.
A default is a literal or `now-Nd` (N days before now, UTC). Queries are read-only: they run with
`readonly = 1`, whoever calls them.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .clickhouse.client import ClickHouse

QUERIES_DIR = Path(__file__).resolve().parent / "clickhouse" / "queries"
_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s+([A-Za-z0-9(), ]+?)\s*(?:=\s*(.+?))?\s*$")
_RELATIVE = re.compile(r"^now-(\d+)d$")
READ_ONLY = {"readonly": 1}


class QueryError(ValueError):
    """A pack query was asked for wrongly (unknown name, missing or unknown parameter)."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str | None


@dataclass(frozen=True)
class Query:
    name: str
    summary: str
    params: tuple[Param, ...]
    doc: str
    sql: str

    def bind(self, given: dict[str, str], now: datetime | None = None) -> dict[str, Any]:
        """Parameter values for the server, from `given` (strings) and the defaults."""
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            raise QueryError(f"query {self.name} has no parameter {', '.join(unknown)}; "
                             f"it takes: {', '.join(sorted(known)) or 'none'}")
        now = now or datetime.now(timezone.utc)
        values: dict[str, Any] = {}
        for p in self.params:
            raw = given.get(p.name, p.default)
            if raw is None:
                raise QueryError(f"query {self.name} needs --param {p.name}=<{p.type}>")
            rel = _RELATIVE.match(raw)
            if rel:
                raw = (now - timedelta(days=int(rel.group(1)))).strftime("%Y-%m-%d %H:%M:%S")
            values[p.name] = raw
        return values


def parse(name: str, text: str) -> Query:
    summary, params, doc = "", [], []
    lines = text.splitlines()
    body_start = 0
    for i, line in enumerate(lines):
        if not line.startswith("--"):
            body_start = i
            break
        if line.startswith("-- summary:"):
            summary = line.split(":", 1)[1].strip()
        elif (m := _PARAM.match(line)) is not None:
            params.append(Param(m.group(1), m.group(2), m.group(3)))
        else:
            doc.append(line[2:].strip())
    if not summary:
        raise ValueError(f"query file {name}.sql has no '-- summary:' line")
    return Query(name, summary, tuple(params), " ".join(doc).strip(), "\n".join(lines[body_start:]).strip())


def load_pack(directory: Path = QUERIES_DIR) -> dict[str, Query]:
    return {p.stem: parse(p.stem, p.read_text()) for p in sorted(directory.glob("*.sql"))}


def get(name: str, pack: dict[str, Query] | None = None) -> Query:
    pack = pack if pack is not None else load_pack()
    if name not in pack:
        raise QueryError(f"no query named {name!r}; `cem query --list` shows the pack: {', '.join(pack)}")
    return pack[name]


def run(client: ClickHouse, query: Query, values: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    r = client.query(query.sql, parameters=values, settings=READ_ONLY)
    return list(r.column_names), [tuple(row) for row in r.result_rows]


def _text(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if v is None:
        return ""
    return str(v)


def render(columns: list[str], rows: list[tuple], fmt: str = "table") -> str:
    """`table` (aligned, for people), `csv`, or `json` (one object per row)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, (_jsonable(v) for v in r), strict=True)) for r in rows], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[_text(v) for v in r] for r in rows])
        return out.getvalue()
    if fmt != "table":
        raise QueryError(f"--format must be table, csv or json, not {fmt!r}")
    cells = [columns] + [[_text(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = [all(_is_number(r[i]) for r in rows) and rows != [] for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        cols = enumerate(zip(row, widths, strict=True))
        lines.append("  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in cols).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return _text(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)
