"""Per-partition insert batches that keep Avro undecoded (DESIGN.md "Landing never decodes
what ClickHouse can decode").

A `PartitionBatch` collects one partition's records between two offsets. Container-file records
contribute their blocks as they are (`schemas/ocf.scan`: no schema parse, no per-event Python);
single-event records contribute their one encoded event as a one-record block. `build()` returns
one container file per writer schema, ready for `raw_insert(..., fmt="Avro")`, each with a dedup
token from (topic, partition, first offset, last offset, group index) and a sync marker derived
from that token: the same offsets always give byte-identical inserts, so a replay after a crash
is dropped by ClickHouse's insert deduplication.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import fastavro

from cem.schemas.ocf import CorruptContainer, assemble, scan
from cem.schemas.serde import OCF_MAGIC, DecodeError


@dataclass(frozen=True)
class Insert:
    token: str
    columns: list[str] | None
    data: bytes
    rows: int
    fmt: str = "Avro"


@dataclass
class _Group:
    schema_json: str
    blocks: list[tuple[int, bytes]] = field(default_factory=list)
    rows: int = 0


class PartitionBatch:
    def __init__(self, topic: str, partition: int, single_schema: Any, single_schema_json: str):
        self.topic = topic
        self.partition = partition
        self.first: int | None = None
        self.last: int | None = None
        self.rows = 0
        self.records = 0
        self._groups: dict[str, _Group] = {}
        self._single_schema = single_schema
        self._single_json = single_schema_json

    def add_container(self, offset: int, value: bytes,
                      check_schema: Callable[[str], None] | None = None) -> int:
        """Add a container-file record; return its event count. Raises DecodeError if the
        container is corrupt or `check_schema` refuses its schema (then nothing was added)."""
        try:
            container = scan(value)
        except CorruptContainer as err:
            raise DecodeError("corrupt_batch", f"Avro container file does not decode: {err}") from None
        if container.codec != "null":
            raise DecodeError("corrupt_batch", f"container codec is {container.codec!r}; cem expects "
                              "codec null (Kafka compresses) — re-publish without an Avro codec")
        if check_schema is not None:
            check_schema(container.schema_json)
        group = self._group(container.schema_json)
        n = container.records
        group.blocks.extend(container.blocks)
        group.rows += n
        self._advance(offset, n)
        return n

    def add_event(self, offset: int, event: dict) -> None:
        """Add one decoded event (from a single-event record), encoded in the single schema."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._single_schema, event)
        group = self._group(self._single_json)
        group.blocks.append((1, out.getvalue()))
        group.rows += 1
        self._advance(offset, 1)

    def add_json(self, offset: int, value: bytes) -> int:
        """Add a JSONEachRow record (newline-separated rows); returns its row count."""
        group = self._group("JSONEachRow")
        n = value.count(b"\n") + 1 if value else 0
        if value:
            group.blocks.append((n, value))
        group.rows += n
        self._advance(offset, n)
        return n

    def skip(self, offset: int) -> None:
        """Record an offset that contributes no rows (dead-lettered), so the range stays whole."""
        self._advance(offset, 0)

    def build(self, table_columns: frozenset[str]) -> list[Insert]:
        inserts = []
        for index, group in enumerate(self._groups.values()):
            if not group.rows:
                continue
            token = f"{self.topic}:{self.partition}:{self.first}-{self.last}:{index}"
            if group.schema_json == "JSONEachRow":
                data = b"\n".join(block for _, block in group.blocks)
                inserts.append(Insert(token, None, data, group.rows, "JSONEachRow"))
                continue
            marker = hashlib.blake2b(token.encode(), digest_size=16).digest()
            data = assemble(group.schema_json, group.blocks, marker)
            schema = json.loads(group.schema_json)
            columns = [f["name"] for f in schema["fields"] if f["name"] in table_columns]
            inserts.append(Insert(token, columns, data, group.rows))
        return inserts

    def _group(self, schema_json: str) -> _Group:
        group = self._groups.get(schema_json)
        if group is None:
            group = self._groups[schema_json] = _Group(schema_json)
        return group

    def _advance(self, offset: int, rows: int) -> None:
        if self.first is None:
            self.first = offset
        self.last = offset
        self.rows += rows
        self.records += 1


def is_container(value: bytes | None) -> bool:
    return bool(value) and value[:4] == OCF_MAGIC
