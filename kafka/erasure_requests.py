"""Erasure requests onto the identity coordinator's input (cem.identity.links, partition 0, header
`cem-control: erase`), so the coordinator stays the single writer of the identifier graph. Used by
`cem privacy erase` and the collector's POST /v1/privacy/erase; nothing is erased until the
coordinator reads it (README "Privacy: consent and erasure")."""
from __future__ import annotations

import json

from confluent_kafka import Producer

from cem.privacy import ErasureRequest
from cem.settings import IDENTITY_LINKS_TOPIC
from .connection import KafkaConnection


def request_erasure(kafka: KafkaConnection, request: ErasureRequest, timeout: float = 30.0) -> None:
    """Returns once Kafka acknowledged the request; raises RuntimeError otherwise."""
    p = Producer(kafka.client_config(**{"enable.idempotence": True}))
    p.produce(IDENTITY_LINKS_TOPIC, value=json.dumps({"control": "erase", "request": request.to_json()}).encode(),
              partition=0, headers=[("cem-control", b"erase")])
    if p.flush(timeout):
        raise RuntimeError("the erasure request was not acknowledged by Kafka; nothing was erased, send it again")
