"""A person's action on an alert (`cem alerts ack|resolve`), sent to the customer stage that owns
the alert — through its own input, so the stage stays the single writer of alert state.

The alert's customer is looked up in cem.alerts (the latest row of that alert id); the action
goes to that customer's partition of cem.touchpoints as a `cem-control: alert` record. If the
customer merged away meanwhile, the stage forwards it to the winner. Idempotent: acknowledging
an acknowledged alert changes nothing.
"""
from __future__ import annotations

import json
import time

from confluent_kafka import Producer

from cem.kafka.admin import partitions_of
from cem.kafka.partitioning import partition_for
from cem.kafka.topic_reader import read_to_end
from cem.settings import ALERTS_TOPIC, TOUCHPOINTS_TOPIC
from cem.kafka.connection import KafkaConnection
from .control import CONTROL_HEADER, AlertAction, encode


def find_alert(kafka: KafkaConnection, alert_id: str, timeout: float = 60.0) -> dict | None:
    """The latest row of `alert_id` in cem.alerts (None if it never existed)."""
    found = None
    needle = f'"alert_id":"{alert_id}"'.encode()
    for m in read_to_end(kafka, ALERTS_TOPIC, timeout=timeout):
        if needle not in (m.value() or b""):
            continue
        for line in m.value().splitlines():
            row = json.loads(line)
            if row.get("alert_id") == alert_id and (found is None or row["version"] >= found["version"]):
                found = row
    return found


def request_action(kafka: KafkaConnection, alert: dict, action: str, by: str, note: str | None,
                   topic: str = TOUCHPOINTS_TOPIC) -> None:
    """Ask the customer stage to act on an alert: a control record on the stage's input `topic`
    (`cem.settings.stage_topic`), in the customer's partition."""
    customer = alert["customer_id"]
    kind, value = encode(AlertAction(customer, alert["alert_id"], action, by or "unknown", note,
                                     int(time.time() * 1000)))
    parts = partitions_of(kafka, [topic])[topic]
    p = Producer(kafka.client_config(**{"enable.idempotence": True}))
    p.produce(topic, key=customer.encode(), value=value,
              partition=partition_for(customer.encode(), parts), headers=[(CONTROL_HEADER, kind.encode())])
    if p.flush(30):
        raise RuntimeError("the alert action was not acknowledged by Kafka; is the broker up?")
