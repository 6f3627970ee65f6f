"""Schema ids for the Confluent wire format, from a file kept in the repo.

`registry.json` maps a numeric id to (subject, version, .avsc file). Ids never change meaning;
a new schema version gets a new id and becomes the subject's `latest`. A `SchemaRegistry` is
read-only and immutable after load, so it is safe to share between threads. A Confluent Schema
Registry can replace it later behind the same two lookups (`writer(id)`, `latest(subject)`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent


def load_avsc(path: Path) -> dict[str, Any]:
    """The raw JSON of an .avsc file (unparsed)."""
    return json.loads(path.read_text())


@dataclass(frozen=True)
class RegisteredSchema:
    id: int
    subject: str
    version: int
    raw: dict[str, Any]
    parsed: Any = field(repr=False, compare=False)


class UnknownSchemaId(LookupError):
    """A wire-format record names a schema id this registry does not hold."""


@dataclass(frozen=True)
class SchemaRegistry:
    by_id: dict[int, RegisteredSchema]
    latest_ids: dict[str, int]

    @classmethod
    def from_dir(cls, directory: Path = SCHEMA_DIR) -> "SchemaRegistry":
        index = json.loads((directory / "registry.json").read_text())
        by_id: dict[int, RegisteredSchema] = {}
        for sid, entry in index["schemas"].items():
            raw = load_avsc(directory / entry["file"])
            by_id[int(sid)] = RegisteredSchema(int(sid), entry["subject"], entry["version"], raw,
                                               fastavro.parse_schema(raw))
        return cls(by_id, {k: int(v) for k, v in index["latest"].items()})

    def writer(self, schema_id: int) -> RegisteredSchema:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(f"schema id {schema_id} is not registered "
                                  f"(known: {sorted(self.by_id)})") from None

    def latest(self, subject: str) -> RegisteredSchema:
        return self.by_id[self.latest_ids[subject]]


_DEFAULT: SchemaRegistry | None = None


def default_registry() -> SchemaRegistry:
    """The registry shipped in this package, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SchemaRegistry.from_dir()
    return _DEFAULT
