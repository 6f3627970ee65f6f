"""Schema ids for the Confluent wire format, from a file kept in the repo.

`registry.json` maps a numeric id to (subject, version, .avsc file). Ids never change meaning;
a new schema version gets a new id and becomes the subject's `latest`. A `SchemaRegistry` is
read-only and immutable after load, so it is safe to share between threads. A Confluent Schema
Registry can replace it later behind the same two lookups (`writer(id)`, `latest(subject)`).

A deployment adds writer schemas of its own producers in a second file of the same shape,
`CEM_SCHEMA_REGISTRY_FILE` (`cem schemas register`): its ids join the shipped ones (an id
already shipped is refused), but never become `latest` — the pipeline keeps reading and writing
its own touchpoint schema, and a registered schema must resolve to it. Each process reads both
files once (`configure` at start); a worker picks up a new registration when it restarts.
"""
from __future__ import annotations

import json
import os
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
    def from_dir(cls, directory: Path = SCHEMA_DIR, extra: Path | None = None) -> "SchemaRegistry":
        """The registry in `directory`, plus the writer schemas registered in `extra` (if given
        and present)."""
        index = json.loads((directory / "registry.json").read_text())
        by_id = _schemas(index, directory)
        if extra is not None and extra.exists():
            added = _schemas(json.loads(extra.read_text()), extra.parent)
            clash = sorted(set(added) & set(by_id))
            if clash:
                raise ValueError(f"{extra}: schema id(s) {clash} are already shipped in "
                                 f"{directory / 'registry.json'}; give them other ids")
            by_id.update(added)
        return cls(by_id, {k: int(v) for k, v in index["latest"].items()})

    def writer(self, schema_id: int) -> RegisteredSchema:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(f"schema id {schema_id} is not registered "
                                  f"(known: {sorted(self.by_id)})") from None

    def latest(self, subject: str) -> RegisteredSchema:
        return self.by_id[self.latest_ids[subject]]


def _schemas(index: dict[str, Any], directory: Path) -> dict[int, RegisteredSchema]:
    by_id: dict[int, RegisteredSchema] = {}
    for sid, entry in index.get("schemas", {}).items():
        raw = load_avsc(directory / entry["file"])
        by_id[int(sid)] = RegisteredSchema(int(sid), entry["subject"], entry["version"], raw,
                                           fastavro.parse_schema(raw))
    return by_id


#: Ids cem's own releases never take: `register` numbers from here when not told an id.
SITE_IDS = 1000


class RegistrationError(ValueError):
    """A schema that cannot be registered; the message says why and what to do."""


def register(extra: Path, avsc: Path, subject: str = "touchpoint", schema_id: int | None = None,
             directory: Path = SCHEMA_DIR) -> tuple[RegisteredSchema, bool]:
    """Add the writer schema in `avsc` to the registry file `extra` (created if missing) under
    `schema_id` (default: the next free id from SITE_IDS). Returns (the entry, whether it was added):
    registering the same schema under the same id again changes nothing. Refused when the file
    does not parse, the id means another schema, or the subject's latest schema cannot read
    data written with it (the pipeline would dead-letter it as schema_mismatch)."""
    from .compat import check_backward
    current = SchemaRegistry.from_dir(directory, extra)
    try:
        raw = load_avsc(avsc)
        parsed = fastavro.parse_schema(raw)
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as err:
        raise RegistrationError(f"{avsc} is not an Avro schema: {err}") from None
    if subject not in current.latest_ids:
        raise RegistrationError(f"unknown subject {subject!r}; known: {sorted(current.latest_ids)}")
    reader = current.latest(subject)
    report = check_backward(reader.raw, raw)
    if not report.compatible:
        raise RegistrationError(f"the {subject} schema (id {reader.id}) cannot read data written with "
                                f"{avsc.name}: " + "; ".join(report.problems)
                                + ". Give new fields a default and keep field types.")
    if schema_id is None:  # from SITE_IDS up, clear of the ids later cem releases take
        schema_id = max([SITE_IDS - 1, *current.by_id]) + 1
    known = current.by_id.get(schema_id)
    if known is not None:
        if known.subject == subject and _canonical(known.raw) == _canonical(raw):
            return known, False
        raise RegistrationError(f"schema id {schema_id} is already registered for another schema "
                                f"({known.subject} v{known.version}); ids never change meaning")
    index: dict[str, Any] = json.loads(extra.read_text()) if extra.exists() else {
        "_doc": "Writer schemas registered with `cem schemas register` (read with the shipped registry)."}
    version = max([s.version for s in current.by_id.values() if s.subject == subject], default=0) + 1
    name = f"{subject}-id{schema_id}.avsc"
    extra.parent.mkdir(parents=True, exist_ok=True)
    (extra.parent / name).write_text(json.dumps(raw, indent=2) + "\n")
    index.setdefault("schemas", {})[str(schema_id)] = {"subject": subject, "version": version, "file": name}
    tmp = extra.with_name(extra.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, extra)  # readers see the old or the new file, never half of it
    return RegisteredSchema(schema_id, subject, version, raw, parsed), True


def _canonical(raw: Any) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


_DEFAULT: SchemaRegistry | None = None
_EXTRA: Path | None = None


def configure(extra: Path | None) -> None:
    """Use the registered schemas in `extra` (CEM_SCHEMA_REGISTRY_FILE) from now on in this
    process; every `cem` command calls it at start."""
    global _DEFAULT, _EXTRA
    _EXTRA = extra
    _DEFAULT = None


def default_registry() -> SchemaRegistry:
    """The registry shipped in this package plus the configured registrations, loaded once per
    process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SchemaRegistry.from_dir(SCHEMA_DIR, _EXTRA)
    return _DEFAULT
