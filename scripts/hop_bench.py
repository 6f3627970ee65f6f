"""Offline micro-benchmark of the customer stage's input hop: what it costs per event to encode
a stamped touchpoint for the stage and to decode it there, for Avro (the container cem.touchpoints
carries) and the candidate internal encodings. One run, same simulator events for every candidate.

    .venv/bin/python scripts/hop_bench.py [events]
"""
from __future__ import annotations

import io
import json
import marshal
import sys
import time

import fastavro

from cem.schemas.registry import default_registry
from cem.schemas.serde import decode_record
from cem.sessions import Touch, touch_of
from cem.sim.simulator import SimConfig, Simulator
from cem.streams.ingest import RESOLUTION, branch_tagged


def main(n: int = 50_000, batch: int = 500) -> None:
    reg = default_registry()
    schema = reg.latest("touchpoint").parsed
    events = []
    for ev in Simulator(SimConfig(customers=n // 20, days=7, seed=2)).run():
        ev = branch_tagged(ev)
        ev["cem"] = (RESOLUTION, {"customer_id": "p:" + ev["event_id"][:12], "late": False, "processed_at": 1})
        events.append(ev)
        if len(events) >= n:
            break
    batches = [events[i:i + batch] for i in range(0, len(events), batch)]

    def avro_enc(b):  # what ingest writes today (container body only; the header is shared)
        out = io.BytesIO()
        for ev in b:
            fastavro.schemaless_writer(out, schema, ev)
        return out.getvalue()

    def ocf(b):
        out = io.BytesIO()
        fastavro.writer(out, schema, b, codec="null", sync_interval=1 << 20)
        return out.getvalue()

    def fields(ev):
        t = touch_of(ev)
        return (ev["cem"][1]["customer_id"], t.at, t.event_id, t.event_type, t.channel, t.subject,
                t.store_id, dict(t.attrs), ev.get("received_at"))

    def avro_dec(v):
        return [touch_of(ev) for ev in decode_record(v, reg, schema).events]

    def m_dec(v):
        return [Touch(*t[1:8]) for t in marshal.loads(v)]

    def j_dec(v):
        return [Touch(*t[1:8]) for t in json.loads(v)]

    cands: dict[str, tuple] = {
        "avro container (today)": (ocf, avro_dec),
        "marshal tuples": (lambda b: marshal.dumps([fields(e) for e in b], 4), m_dec),
        "json tuples": (lambda b: json.dumps([fields(e) for e in b]).encode(), j_dec),
    }
    try:
        import msgpack
        cands["msgpack tuples"] = (lambda b: msgpack.packb([fields(e) for e in b]),
                                   lambda v: [Touch(*t[1:8]) for t in msgpack.unpackb(v, use_list=False)])
    except ImportError:
        pass
    print(f"{len(events):,} simulator events in records of {batch}; µs per event (best of 3)")
    print(f"{'encoding':28} {'encode':>8} {'decode':>8} {'bytes/ev':>9}")
    extra = min(timeit(lambda: [fields(e) for b in batches for e in b]) for _ in range(3))
    for name, (enc, dec) in cands.items():
        recs = [enc(b) for b in batches]
        te = min(timeit(lambda enc=enc: [enc(b) for b in batches]) for _ in range(3))
        td = min(timeit(lambda dec=dec, recs=recs: [dec(r) for r in recs]) for _ in range(3))
        size = sum(map(len, recs)) / len(events)
        print(f"{name:28} {te / len(events) * 1e6:8.2f} {td / len(events) * 1e6:8.2f} {size:9.0f}")
    print(f"(of each tuple encode: picking the stage's fields {extra / len(events) * 1e6:.2f} µs)")


def timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
