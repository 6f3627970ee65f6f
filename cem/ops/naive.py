"""The naive baseline of `cem bench` (stage b): what a straightforward Faust app does — one
event per Kafka record, `take()` batches, decode in Python, insert Python rows. Kept only to be
measured against; cem never runs this shape. Run: python -m cem.ops.naive TOPIC N OUT DSN BOOTSTRAP
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone

import faust

from cem.kafka.connection import KafkaConnection
from cem.schemas.registry import default_registry
from cem.schemas.serde import decode_record
from cem.sinks.clickhouse.client import connect
from cem.sinks.clickhouse.migrations import apply
from cem.settings import Settings

_TUPLES = ("identifiers", "web", "store", "phone", "returns", "feedback", "email", "contact", "cem")


def main(topic: str, expected: int, out: str, dsn: str, bootstrap: str) -> None:
    reg = default_registry()
    w = reg.latest("touchpoint")
    fields = {f["name"]: f for f in w.raw["fields"]}
    subfields = {}
    for name in _TUPLES:
        rec = [t for t in fields[name]["type"] if isinstance(t, dict)] if isinstance(fields[name]["type"], list) \
            else [fields[name]["type"]]
        subfields[name] = [f["name"] for f in rec[0]["fields"]]
    columns = list(fields)
    client = connect(dsn)
    apply(client)
    kafka = KafkaConnection.from_settings(Settings(kafka_bootstrap=bootstrap))  # security as `cem bench`'s env says
    app = faust.App(f"cem-naive-{os.getpid()}", broker=kafka.faust_broker(),
                    broker_credentials=kafka.faust_credentials(), value_serializer="raw",
                    key_serializer="raw", web_enabled=False, topic_allow_declare=False,
                    topic_disable_leader=True, consumer_auto_offset_reset="earliest", store="memory://")
    src = app.topic(topic, value_type=bytes)
    state = {"n": 0, "first": None}

    def row(ev: dict) -> list:
        r = []
        for c in columns:
            v = ev.get(c)
            if c in _TUPLES:
                v = tuple((v or {}).get(s) for s in subfields[c])
            r.append(v)
        r[columns.index("occurred_at")] = datetime.fromtimestamp(ev["occurred_at"] / 1000, timezone.utc)
        r[columns.index("received_at")] = datetime.fromtimestamp(ev["received_at"] / 1000, timezone.utc)
        return r

    @app.agent(src, concurrency=1)
    async def land(stream):
        async for values in stream.take(1000, within=0.5):
            if state["first"] is None:
                state["first"] = time.perf_counter()
            rows = [row(e) for v in values for e in decode_record(v, reg, w.parsed).events]
            client.insert("touchpoints", rows, column_names=columns)
            state["n"] += len(rows)
            if state["n"] >= expected:
                elapsed = time.perf_counter() - state["first"]
                with open(out, "w") as f:
                    json.dump({"events": state["n"], "seconds": elapsed}, f)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
