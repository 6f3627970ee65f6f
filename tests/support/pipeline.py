"""Run the real roles (worker, sink) as child processes in tests and wait on Kafka offsets."""
from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from cem.connectors.kafka_admin import group_lag
from cem.procs import start_role, stop_role, wait_until
from cem.settings import RAW_TOPICS, TOUCHPOINTS_TOPIC


def start(role: str, settings, name: str | None = None, *args: str, **env: str):
    return start_role(role, settings, settings.data_dir / f"{name or role}.log", *args, **env)


def caught_up(settings, worker_group: str | None = None) -> bool:
    b = settings.kafka_bootstrap
    return (group_lag(b, worker_group or settings.app_id, list(RAW_TOPICS.values())) == 0
            and group_lag(b, f"{settings.app_id}-landing", [TOUCHPOINTS_TOPIC]) == 0)


def wait_caught_up(settings, procs=(), timeout: float = 240, worker_group: str | None = None) -> None:
    wait_until(lambda: caught_up(settings, worker_group), timeout, what="worker and landing to catch up",
               procs=tuple(procs))


def end_offsets(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cem-test-offsets"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


__all__ = ["start", "stop_role", "caught_up", "wait_caught_up", "end_offsets", "wait_until"]
