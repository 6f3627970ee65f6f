"""Per-partition insert batches that keep Avro undecoded (DESIGN.md "Landing never decodes
what ClickHouse can decode").

A `PartitionBatch` collects one partition's records between two offsets. Container-file records
contribute their blocks as they are (`schemas/ocf.scan`: no schema parse, no per-event Python);
single-event records contribute their one encoded event as a one-record block. `build_inserts`
turns the batches of one table cut together (any number of partitions) into one container file
per writer schema, ready for `raw_insert(..., fmt="Avro")`, each with a dedup token naming every
(topic, partition, first offset, last offset) it covers and a sync marker derived from that
token: the same cut always gives byte-identical inserts, so a replay after a crash is dropped by
ClickHouse's insert deduplication.
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
    #: (topic, partition, first offset, last offset) of every batch in it
    ranges: tuple[tuple[str, int, int, int], ...] = ()
    #: where its rows came from, in data order: (topic, partition, offset, rows) per block
    #: (a JSON record's rows are its lines); tells a dead letter its source record
    sources: tuple[tuple[str, int, int, int], ...] = ()


@dataclass
class _Group:
    schema_json: str
    blocks: list[tuple[int, bytes]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # the record offset of each block
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
        group.offsets.extend([offset] * len(container.blocks))
        group.rows += n
        self._advance(offset, n)
        return n

    def add_event(self, offset: int, event: dict) -> None:
        """Add one decoded event (from a single-event record), encoded in the single schema."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._single_schema, event)
        group = self._group(self._single_json)
        group.blocks.append((1, out.getvalue()))
        group.offsets.append(offset)
        group.rows += 1
        self._advance(offset, 1)

    def add_json(self, offset: int, value: bytes) -> int:
        """Add a JSONEachRow record (newline-separated rows); returns its row count."""
        group = self._group("JSONEachRow")
        n = value.count(b"\n") + 1 if value else 0
        if value:
            group.blocks.append((n, value))
            group.offsets.append(offset)
        group.rows += n
        self._advance(offset, n)
        return n

    def skip(self, offset: int) -> None:
        """Record an offset that contributes no rows (dead-lettered), so the range stays whole."""
        self._advance(offset, 0)

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


def cut_token(batches: list[PartitionBatch]) -> str:
    """The ranges of a cut, in (topic, partition) order: `topic:partition:first-last|...`."""
    return "|".join(f"{b.topic}:{b.partition}:{b.first}-{b.last}"
                    for b in sorted(batches, key=lambda b: (b.topic, b.partition)))


def cut_id(batches: list[PartitionBatch]) -> str:
    """A short name of a cut, stored with each partition's plan so a restart can cut the same
    partitions together again."""
    return hashlib.blake2b(cut_token(batches).encode(), digest_size=8).hexdigest()


def build_inserts(batches: list[PartitionBatch], table_columns: frozenset[str]) -> list[Insert]:
    """One insert per writer schema over `batches` (one table's batches cut together), blocks
    in (topic, partition, offset) order. Deterministic: the same batches give the same tokens
    and bytes (token `<cut_token>:<schema index>`)."""
    ordered = sorted((b for b in batches if b.first is not None), key=lambda b: (b.topic, b.partition))
    if not ordered:
        return []
    prefix = cut_token(ordered)
    ranges = tuple((b.topic, b.partition, b.first, b.last) for b in ordered
                   if b.first is not None and b.last is not None)  # (every one of them: none is empty)
    groups: dict[str, list[tuple[PartitionBatch, _Group]]] = {}
    for b in ordered:
        for schema_json, group in b._groups.items():
            if group.rows:
                groups.setdefault(schema_json, []).append((b, group))
    inserts = []
    for index, (schema_json, parts) in enumerate(groups.items()):
        rows = sum(g.rows for _, g in parts)
        token = f"{prefix}:{index}"
        blocks = [block for _, g in parts for block in g.blocks]
        sources = tuple((b.topic, b.partition, offset, n) for b, g in parts
                        for (n, _), offset in zip(g.blocks, g.offsets, strict=True))
        if schema_json == "JSONEachRow":
            inserts.append(Insert(token, None, b"\n".join(data for _, data in blocks), rows, "JSONEachRow",
                                  ranges, sources))
            continue
        data = assemble(schema_json, blocks, _marker(token))
        schema = json.loads(schema_json)
        columns = [f["name"] for f in schema["fields"] if f["name"] in table_columns]
        inserts.append(Insert(token, columns, data, rows, "Avro", ranges, sources))
    return inserts


def _take(sources: tuple[tuple[str, int, int, int], ...], rows: int) -> tuple[tuple, tuple]:
    """`sources` of the first `rows` rows and of the rest (a source across the cut is in both)."""
    head, rest = [], list(sources)
    while rest and rows > 0:
        topic, partition, offset, n = rest.pop(0)
        if n > rows:
            head.append((topic, partition, offset, rows))
            rest.insert(0, (topic, partition, offset, n - rows))
        else:
            head.append((topic, partition, offset, n))
        rows -= n
    return tuple(head), tuple(rest)


def _marker(token: str) -> bytes:
    return hashlib.blake2b(token.encode(), digest_size=16).digest()


def split_insert(ins: Insert) -> list[Insert]:
    """Two halves of an insert ClickHouse refused, by rows, so landing can find the rows it
    refuses and insert the rest; [] when `ins` holds one row (or one Avro block whose records
    fastavro cannot tell apart). Each half's token is the insert's plus `/0` or `/1`:
    deterministic, so a replay after a crash halves the same way and ClickHouse drops the
    halves that landed before."""
    if ins.fmt == "JSONEachRow":
        lines = ins.data.split(b"\n")  # rows as `add_json` counts them
        if len(lines) < 2:
            return []
        mid = len(lines) // 2
        line_halves = [lines[:mid], lines[mid:]]
        return [Insert(f"{ins.token}/{i}", ins.columns, b"\n".join(h), len(h), ins.fmt, ins.ranges, src)
                for i, (h, src) in enumerate(zip(line_halves, _take(ins.sources, mid), strict=True))]
    container = scan(ins.data)
    blocks = [b for b in container.blocks if b[0]]
    if sum(n for n, _ in blocks) < 2:
        return []
    if len(blocks) == 1:
        count, data = blocks[0]
        ends = _record_ends(container.schema_json, data, count)
        if ends is None:
            return []
        mid = count // 2
        cut = ends[mid - 1]
        halves = [[(mid, data[:cut])], [(count - mid, data[cut:])]]
        first_rows = mid
    else:
        total, acc, k = sum(n for n, _ in blocks), 0, 1
        for k in range(1, len(blocks)):
            acc += blocks[k - 1][0]
            if acc * 2 >= total:
                break
        halves = [blocks[:k], blocks[k:]]
        first_rows = sum(n for n, _ in blocks[:k])
    out = []
    for i, (half, src) in enumerate(zip(halves, _take(ins.sources, first_rows), strict=True)):
        token = f"{ins.token}/{i}"
        out.append(Insert(token, ins.columns, assemble(container.schema_json, half, _marker(token)),
                          sum(n for n, _ in half), ins.fmt, ins.ranges, src))
    return out


def _record_ends(schema_json: str, data: bytes, count: int) -> list[int] | None:
    """Where each of a block's `count` records ends, read with fastavro; None if it cannot."""
    try:
        schema = fastavro.parse_schema(json.loads(schema_json))
        buf = io.BytesIO(data)
        ends = []
        for _ in range(count):
            fastavro.schemaless_reader(buf, schema, None)
            ends.append(buf.tell())
        return ends
    except Exception:  # noqa: BLE001 - bytes fastavro refuses: the block stays whole
        return None


def split_rows(batches: list[PartitionBatch], max_rows: int, parts: int) -> list[list[PartitionBatch]]:
    """One table's cut as up to `parts` inserts of about `max_rows` rows each (whole partition
    batches, largest first into the lightest insert): a small cut stays one insert (about one
    insert per second per table at steady state), a large one keeps every insert thread busy."""
    rows = sum(b.rows for b in batches)
    n = max(1, min(parts, len(batches), -(-rows // max_rows)))
    bins: list[list[PartitionBatch]] = [[] for _ in range(n)]
    loads = [0] * n
    for b in sorted(batches, key=lambda b: (-b.rows, b.topic, b.partition)):
        i = loads.index(min(loads))
        bins[i].append(b)
        loads[i] += b.rows
    return [b for b in bins if b]


@dataclass(frozen=True)
class PlannedInsert:
    """One group of a cut's batches inserted together: its inserts (one per writer schema) and,
    per batch, the write-ahead mark `(topic, partition, first offset, "<last>:<cut id>")` that is
    committed before inserting, so a restart can re-form exactly this group."""
    table: str
    inserts: tuple[Insert, ...]
    marks: tuple[tuple[str, int, int, str], ...]


def plan_cut(by_table: dict[str, list[PartitionBatch]], columns: dict[str, frozenset[str]],
             max_rows: int, parts: int, *, replay: bool = False) -> list[PlannedInsert]:
    """The inserts of one cut: per table, up to `parts` groups of about `max_rows` rows
    (`split_rows`), each group one `PlannedInsert`.

    `replay=True` is for a crashed run's group re-formed after a restart (`by_table` holds
    exactly that group's batches): it is never split again, so it comes out with the crashed
    insert's token and bytes and ClickHouse drops it as a duplicate. (Split again, a group of
    more than `max_rows` rows over several partitions became two inserts with new tokens and
    landed twice.) Deterministic: the same batches give the same plans."""
    planned = []
    for table, batches in by_table.items():
        groups = [batches] if replay else split_rows(batches, max_rows, parts)
        for group in groups:
            built = build_inserts(group, columns[table])
            if not built:
                continue
            name = cut_id(group)
            marks = tuple((b.topic, b.partition, b.first, f"{b.last}:{name}")
                          for b in sorted(group, key=lambda b: (b.topic, b.partition)) if b.first is not None)
            planned.append(PlannedInsert(table, tuple(built), marks))
    return planned


def is_container(value: bytes | None) -> bool:
    return value is not None and value[:4] == OCF_MAGIC
