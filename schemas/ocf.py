"""Avro Object Container Files at the block level, without a schema parse per record.

fastavro's `block_reader` parses the writer schema from every file header, which costs more
than the rest of landing together for a rich schema. Landing only needs each record's schema
*text* (to group blocks), its codec, and the blocks themselves, checked against the file's sync
marker; `scan` gets exactly that with a few varint reads per block. `assemble` writes blocks of
one schema into a new container file under a given sync marker (deterministic output).
Spec: https://avro.apache.org/docs/current/specification/#object-container-files
"""
from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"Obj\x01"


class CorruptContainer(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Container:
    schema_json: str
    codec: str
    blocks: list[tuple[int, bytes]]  # (record count, block data)

    @property
    def records(self) -> int:
        return sum(n for n, _ in self.blocks)


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    acc = 0
    while True:
        if pos >= len(buf):
            raise CorruptContainer("truncated varint")
        b = buf[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptContainer("varint longer than 64 bits")


def write_long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def scan(value: bytes) -> Container:
    """Split a container file into schema text, codec and blocks; raise CorruptContainer if it
    is truncated, a sync marker does not match, or a size is impossible."""
    if value[:4] != MAGIC:
        raise CorruptContainer("not an Avro container file (magic 'Obj\\x01' missing)")
    pos = 4
    meta: dict[str, bytes] = {}
    while True:
        count, pos = _read_long(value, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _read_long(value, pos)  # byte size of the map block, unused
        for _ in range(count):
            klen, pos = _read_long(value, pos)
            if klen < 0 or pos + klen > len(value):
                raise CorruptContainer("metadata key runs past the end")
            try:
                key = value[pos:pos + klen].decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptContainer("metadata key is not UTF-8") from None
            pos += klen
            vlen, pos = _read_long(value, pos)
            if vlen < 0 or pos + vlen > len(value):
                raise CorruptContainer("metadata value runs past the end")
            meta[key] = value[pos:pos + vlen]
            pos += vlen
    sync = value[pos:pos + 16]
    if len(sync) != 16:
        raise CorruptContainer("truncated header (no sync marker)")
    pos += 16
    if "avro.schema" not in meta:
        raise CorruptContainer("header has no avro.schema")
    blocks: list[tuple[int, bytes]] = []
    end = len(value)
    while pos < end:
        count, pos = _read_long(value, pos)
        size, pos = _read_long(value, pos)
        if count < 0 or size < 0 or pos + size + 16 > end:
            raise CorruptContainer(f"block at byte {pos} runs past the end (truncated?)")
        data = value[pos:pos + size]
        pos += size
        if value[pos:pos + 16] != sync:
            raise CorruptContainer(f"wrong sync marker after the block ending at byte {pos}")
        pos += 16
        blocks.append((count, data))
    return Container(meta["avro.schema"].decode("utf-8", "replace"),
                     meta.get("avro.codec", b"null").decode("ascii", "replace"), blocks)


def header(schema_json: str, sync: bytes, codec: str = "null") -> bytes:
    """A container-file header for `schema_json` with the given 16-byte sync marker."""
    out = bytearray(MAGIC)
    out += write_long(2)
    for key, val in (("avro.schema", schema_json.encode()), ("avro.codec", codec.encode())):
        out += write_long(len(key)) + key.encode() + write_long(len(val)) + val
    out += write_long(0) + sync
    return bytes(out)


def assemble(schema_json: str, blocks: list[tuple[int, bytes]], sync: bytes) -> bytes:
    """One container file holding `blocks` (all written with `schema_json`, codec null)."""
    parts = [header(schema_json, sync)]
    for count, data in blocks:
        parts.append(write_long(count) + write_long(len(data)))
        parts.append(data)
        parts.append(sync)
    return b"".join(parts)

