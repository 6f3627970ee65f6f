"""Forward-only numbered migrations (`migrations/NNN_name.sql`), applied in order, each once.

Applied versions are recorded in `cem_migrations`. A file may hold several statements separated
by `;` at line end. Re-running `apply` is a no-op; a failed statement stops the run with the
file named, leaving earlier migrations applied.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .client import ClickHouse

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name} must be named NNN_name.sql")
        text = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("--"))
        stmts = tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip())
        found.append(Migration(int(m.group(1)), m.group(2), stmts))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


def apply(client: ClickHouse, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations; return those applied now."""
    client.command("CREATE TABLE IF NOT EXISTS cem_migrations (version UInt32, name String, "
                   "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version")
    done = {row[0] for row in client.query("SELECT version FROM cem_migrations").result_rows}
    applied = []
    for mig in load(directory):
        if mig.version in done:
            continue
        for stmt in mig.statements:
            try:
                client.command(stmt)
            except Exception as err:
                raise RuntimeError(f"migration {mig.version:03d}_{mig.name} failed: {err}") from err
        client.command(f"INSERT INTO cem_migrations (version, name) VALUES ({mig.version}, '{mig.name}')")
        applied.append(mig)
    return applied
