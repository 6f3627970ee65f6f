"""Schema evolution check: every working schema must stay backward compatible with its last
released version, so consumers on the new schema still read everything already in Kafka.

Backward = the new schema, as reader, resolves data written with the released schema (the
Confluent Schema Registry's BACKWARD rule). Uses the `avro` package's checker, which reports
every incompatibility with its location in the schema.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from .registry import SCHEMA_DIR


@dataclass(frozen=True)
class CompatReport:
    subject: str
    released: str
    compatible: bool
    problems: tuple[str, ...]


def check_backward(new_schema: dict, released_schema: dict, subject: str = "",
                   released: str = "") -> CompatReport:
    """Can a reader on `new_schema` read data written with `released_schema`?"""
    reader = avro.schema.parse(json.dumps(new_schema))
    writer = avro.schema.parse(json.dumps(released_schema))
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    ok = result.compatibility is SchemaCompatibilityType.compatible
    kinds = ", ".join(sorted({i.name for i in result.incompatibilities}))
    # the checker unions messages and locations into two separate sets of different sizes, so they
    # cannot be paired: report every message, then every place in the schema with a problem
    where = ", ".join(sorted(set(result.locations) - {"/"})) or "/"
    problems = tuple(f"{kinds}: '{msg}'" for msg in sorted(result.messages)) + (f"at {where}",) if not ok else ()
    return CompatReport(subject, released, ok, problems)


def check_all(directory: Path = SCHEMA_DIR) -> list[CompatReport]:
    """Compare every `<subject>.avsc` with the newest `history/<subject>-vN.avsc`."""
    reports = []
    for working in sorted(directory.glob("*.avsc")):
        subject = working.stem
        history = sorted(directory.glob(f"history/{subject}-v*.avsc"),
                         key=lambda p: int(p.stem.rsplit("-v", 1)[1]))
        if not history:
            reports.append(CompatReport(subject, "(none)", True, ()))
            continue
        reports.append(check_backward(json.loads(working.read_text()),
                                      json.loads(history[-1].read_text()),
                                      subject, history[-1].name))
    return reports
