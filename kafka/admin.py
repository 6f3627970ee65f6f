"""Topic administration: every cem topic is pre-created with its partition count (DESIGN.md:
Faust must not auto-create them)."""
from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from cem.kafka.connection import KafkaConnection


def ensure_topics(kafka: KafkaConnection, topics: dict[str, int], *, config: dict[str, str] | None = None,
                  timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    admin = AdminClient(kafka.client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [NewTopic(name, num_partitions=n, replication_factor=1, config=config or {})
           for name, n in topics.items() if name not in existing]
    if not new:
        return []
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating topic {name} failed: {err}") from err
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # metadata propagates asynchronously
        md = admin.list_topics(timeout=timeout).topics
        if all(t.topic in md and not md[t.topic].error for t in new):
            break
        time.sleep(0.1)
    return [t.topic for t in new]


def partitions_of(kafka: KafkaConnection, topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    admin = AdminClient(kafka.client_config())
    md = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t not in md]
    if missing:
        raise RuntimeError(f"topics {missing} do not exist; run `cem topics create` first")
    return {t: len(md[t].partitions) for t in topics}


def delete_topics(kafka: KafkaConnection, topics: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient(kafka.client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    todo = [t for t in topics if t in existing]
    if not todo:
        return
    for fut in admin.delete_topics(todo, operation_timeout=timeout).values():
        fut.result()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # deletion completes asynchronously
        if not set(todo) & set(admin.list_topics(timeout=timeout).topics):
            return
        time.sleep(0.1)


def _committed(consumer: Any, topics: list[str], timeout: float, attempts: int = 20) -> list:
    """The group's committed TopicPartitions of every partition of `topics` (offset < 0: none);
    asked up to `attempts` times (the group coordinator may still be loading on a fresh broker)."""
    from confluent_kafka import TopicPartition
    md = consumer.list_topics(timeout=timeout).topics
    tps = [TopicPartition(t, p) for t in topics for p in md[t].partitions]
    for attempt in range(1, attempts + 1):
        try:
            return consumer.committed(tps, timeout=timeout)
        except KafkaException:
            if attempt == attempts:
                raise
            time.sleep(0.25)
    return []


def committed_total(kafka: KafkaConnection, group: str, topics: list[str], timeout: float = 10.0) -> int:
    """Sum of the offsets `group` committed on `topics`: grows whenever the group makes progress.
    Asks once (a progress probe): raises KafkaException when the broker cannot answer."""
    from confluent_kafka import Consumer
    consumer = Consumer(kafka.client_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        return sum(max(tp.offset, 0) for tp in _committed(consumer, topics, timeout, attempts=1))
    finally:
        consumer.close()


def group_lag(kafka: KafkaConnection, group: str, topics: list[str], timeout: float = 10.0) -> int:
    """Records in `topics` not yet committed by consumer group `group` (0 = caught up)."""
    return sum(lag_by_topic(kafka, group, topics, timeout).values())


def lag_by_topic(kafka: KafkaConnection, group: str, topics: list[str], timeout: float = 10.0,
                 attempts: int = 20) -> dict[str, int]:
    """Per topic, the records not yet committed by consumer group `group`. Each broker request
    waits at most `timeout`; the committed offsets are asked up to `attempts` times (see
    `_committed`). Raises KafkaException when the broker cannot answer."""
    from confluent_kafka import Consumer

    consumer = Consumer(kafka.client_config(**{"group.id": group,
                                                    "enable.auto.commit": False}))
    try:
        lag = dict.fromkeys(topics, 0)
        for tp in _committed(consumer, topics, timeout, attempts):
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            pos = tp.offset if tp.offset >= 0 else low
            lag[tp.topic] += max(0, high - pos)
        return lag
    finally:
        consumer.close()


def broker_answers(kafka: KafkaConnection, timeout: float = 5.0) -> str | None:
    """Ask the brokers for metadata once; None if one answered within `timeout`, else the error
    (a role checks this before it starts, so a missing broker is one line, not a retry storm).
    librdkafka's own connection messages are discarded: the caller says what went wrong."""
    import logging
    quiet = logging.getLogger("cem.kafka.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient(kafka.client_config(logger=quiet))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as err:
        return str(err.args[0].str() if err.args and hasattr(err.args[0], "str") else err)
    return None
