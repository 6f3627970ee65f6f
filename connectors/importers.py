"""`cem import <channel> FILE`: CSV and JSONL exports of channel systems → cem.raw.<channel>.

Each channel has a documented default column mapping (below; override any part with
`--mapping FILE.json` holding {"columns": {"export column": "target"}, "defaults": {...}}).
Targets: envelope fields (event_id, event_type, occurred_at, store_id, location),
`identifiers.<kind>` (raw `identifiers.email` / `identifiers.phone` are hashed here) and
`attributes.<field>` and `contact.<field>` (topic, case_id, resolved, agent_id of a
customer-service contact). Columns without a mapping are ignored and reported.

Every row either becomes a touchpoint or goes to cem.dlq with file, line and reason; the import
returns counts. Published through the batch publisher; returns only after Kafka acked it all.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from confluent_kafka import Producer

from cem import metrics
from cem.identity import customer_key
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, RAW_TOPICS, Settings
from cem.kafka.connection import KafkaConnection
from cem.kafka.dlq import DeadLetters
from cem.kafka.admin import partitions_of
from .mapping import to_touchpoint
from .pseudonymize import Pseudonymizer, redact_pii
from cem.kafka.publisher import BatchPublisher, producer_config

DEFAULT_MAPPINGS: dict[str, dict[str, Any]] = {
    "store": {"columns": {
        "transaction_id": "event_id", "type": "event_type", "timestamp": "occurred_at", "store": "store_id",
        "terminal": "attributes.terminal_id", "loyalty_card": "identifiers.loyalty_id",
        "email": "identifiers.email", "customer_id": "identifiers.customer_id", "sku": "attributes.product_id",
        "amount_cents": "attributes.amount_cents", "currency": "attributes.currency", "items": "attributes.items",
        "wait_seconds": "attributes.wait_seconds", "order_id": "identifiers.order_id",
        "topic": "contact.topic", "case_id": "contact.case_id", "resolved": "contact.resolved",
        "staff_id": "contact.agent_id"}, "defaults": {"event_type": "purchase"}},
    "phone": {"columns": {
        "record_id": "event_id", "event": "event_type", "timestamp": "occurred_at", "caller": "identifiers.phone",
        "customer_id": "identifiers.customer_id", "order_id": "identifiers.order_id", "call_id": "attributes.call_id",
        "ivr_step": "attributes.ivr_step", "hold_seconds": "attributes.hold_seconds", "queue": "attributes.queue",
        "agent": "attributes.agent_id", "disposition": "attributes.reason", "resolved": "attributes.resolved",
        "duration_seconds": "attributes.duration_seconds", "topic": "contact.topic",
        "ticket_id": "contact.case_id"}, "defaults": {}},
    "returns": {"columns": {
        "id": "event_id", "status": "event_type", "timestamp": "occurred_at", "rma": "attributes.rma_id",
        "order_id": "identifiers.order_id", "email": "identifiers.email", "customer_id": "identifiers.customer_id",
        "reason_code": "attributes.reason", "sku": "attributes.product_id", "refund_cents": "attributes.amount_cents",
        "currency": "attributes.currency"}, "defaults": {}},
    "feedback": {"columns": {
        "response_id": "event_id", "type": "event_type", "submitted_at": "occurred_at",
        "email": "identifiers.email", "customer_id": "identifiers.customer_id",
        "loyalty_card": "identifiers.loyalty_id", "survey": "attributes.survey_id", "nps": "attributes.nps",
        "csat": "attributes.csat", "rating": "attributes.rating", "comment": "attributes.comment"},
        "defaults": {"event_type": "survey_response"}},
    "web": {"columns": {}, "defaults": {}},
    # a helpdesk's email export: customer emails received and service's replies
    "email": {"columns": {
        "message_id": "event_id", "type": "event_type", "timestamp": "occurred_at", "from": "identifiers.email",
        "customer_id": "identifiers.customer_id", "order_id": "identifiers.order_id",
        "thread_id": "attributes.thread_id", "mailbox": "attributes.mailbox", "topic": "contact.topic",
        "ticket_id": "contact.case_id", "resolved": "contact.resolved", "agent": "contact.agent_id"},
        "defaults": {"event_type": "email_received"}},
}


@dataclass
class ImportReport:
    rows: int = 0
    published: int = 0
    dead: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    ignored_columns: set[str] = field(default_factory=set)
    seconds: float = 0.0


def load_mapping(channel: str, path: Path | None) -> dict[str, Any]:
    base = json.loads(json.dumps(DEFAULT_MAPPINGS[channel]))
    if path is not None:
        try:
            override = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"mapping file {path}: {err}") from None
        unknown = set(override) - {"columns", "defaults"}
        if unknown:
            raise ValueError(f"mapping file {path}: unknown keys {sorted(unknown)}; use 'columns' and 'defaults'")
        base["columns"].update(override.get("columns", {}))
        base["defaults"].update(override.get("defaults", {}))
    return base


class MappingConflict(ValueError):
    """A mapped column targets a section (``identifiers.email``) that the row already carries
    as something other than an object; the row is dead-lettered with this message."""


def row_to_object(row: dict[str, Any], mapping: dict[str, Any], ignored: set[str]) -> dict[str, Any]:
    """Apply the column mapping to one flat row (CSV) or object (JSONL).

    Raises MappingConflict when a mapped column cannot be placed (its section is not an object)."""
    cols = mapping["columns"]
    obj: dict[str, Any] = dict(mapping["defaults"])
    for key, value in row.items():
        target = cols.get(key)
        if target is None:
            if key in ("event_id", "event_type", "occurred_at", "store_id", "location", "identifiers",
                       "attributes", "contact", "channel", "timestamp") or not cols:
                obj[key] = value  # already in cem's own shape
            else:
                ignored.add(key)
            continue
        if value is None or value == "":
            continue
        if "." in target:
            section, name = target.split(".", 1)
            into = obj.setdefault(section, {})
            if not isinstance(into, dict):
                raise MappingConflict(f"column {key!r} maps to {target} but the row's {section!r} is a "
                                      f"{type(into).__name__}, not an object; drop one of the two or "
                                      f"change the mapping file")
            into[name] = value
        else:
            obj[target] = value
    return obj


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, bytes, str | None]]:
    """(line number, row or None, raw line, parse error) for a .csv or .jsonl file."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                raw = json.dumps(row).encode()
                if None in row:  # more cells than header columns
                    yield reader.line_num, None, raw, "row has more cells than the header"
                    continue
                yield reader.line_num, row, raw, None
        return
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError, RecursionError) as err:
                yield n, None, line, f"line is not valid JSON: {err}"[:200]
                continue
            if not isinstance(obj, dict):
                yield n, None, line, "line is not a JSON object"
                continue
            yield n, obj, line, None


def import_file(settings: Settings, channel: str, path: Path, mapping_path: Path | None = None,
                progress: Callable[[int], None] | None = None) -> ImportReport:
    if channel not in RAW_TOPICS:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(RAW_TOPICS)}")
    if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"{path}: use a .csv or .jsonl file")
    mapping = load_mapping(channel, mapping_path)
    kafka = KafkaConnection.from_settings(settings)
    producer = Producer(producer_config(kafka))
    w = default_registry().latest("touchpoint")
    pub = BatchPublisher(producer, w.parsed, partitions_of(kafka, list(RAW_TOPICS.values())),
                         max_events=settings.publisher_max_events, linger_ms=settings.publisher_linger_ms)
    dead = DeadLetters(producer, DLQ_TOPIC, "import", metrics.dead_letter)
    pz = Pseudonymizer(settings.pseudonymization_key.get_secret_value().encode())
    report = ImportReport()
    started = time.perf_counter()
    horizon = settings.accept_horizon_days * 86_400_000
    source = f"import:{path.name}"
    for line, row, raw, error in read_rows(path):
        report.rows += 1
        if progress and report.rows % 1000 == 0:
            progress(1000)
        now = int(time.time() * 1000)
        if row is None:
            res: Any = None
            reason, detail = "unparsable_row", error or "unparsable"
        else:
            try:
                obj = row_to_object(row, mapping, report.ignored_columns)
            except MappingConflict as err:
                res, reason, detail = None, "mapping_conflict", str(err)
            else:
                res = to_touchpoint(obj, default_channel=channel, source=source, now_ms=now, horizon_ms=horizon,
                                    pseudonymizer=pz)
                if not isinstance(res, dict):
                    reason, detail = res.reason, res.detail
        if isinstance(res, dict):
            if res["channel"] != channel:
                reason, detail = "wrong_channel", f"row is a {res['channel']} event in a {channel} import"
            else:
                pub.publish(RAW_TOPICS[channel], customer_key(res["identifiers"]).encode(), res)
                report.published += 1
                continue
        dead.send(redact_pii(raw), reason, f"{path.name} line {line}: {detail}", topic=f"file:{path}",
                  partition=-1, offset=line)
        report.dead += 1
        report.reasons[reason] = report.reasons.get(reason, 0) + 1
    pub.flush()
    if producer.flush(30):
        raise RuntimeError("dead letters not acknowledged by Kafka within 30 s")
    report.seconds = time.perf_counter() - started
    return report
