"""Run the real roles (worker, sink) as child processes in tests and wait on Kafka offsets (and,
for event time, on the worker's metrics)."""
from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from cem.kafka.connection import KafkaConnection
from cem.ops.procs import start_role, stop_role, wait_until


def start(role: str, settings, name: str | None = None, *args: str, **env: str):
    return start_role(role, settings, settings.data_dir / f"{name or role}.log", *args, **env)


def caught_up(settings, worker_group: str | None = None) -> bool:
    from cem.ops.procs import pipeline_lag
    return pipeline_lag(settings, worker_group) == 0


def wait_caught_up(settings, procs=(), timeout: float = 240, worker_group: str | None = None) -> None:
    wait_until(lambda: caught_up(settings, worker_group), timeout, what="worker and landing to catch up",
               procs=tuple(procs))


def event_time_at_wall_clock(metrics_port: int, lateness_ms: int, slack_s: float = 60.0) -> bool:
    """True when every partition of the worker's customer stage has its event-time watermark at
    the wall clock minus the allowed lateness (within `slack_s`): every raw partition went quiet
    and event time jumped to the wall clock, so the deadlines up to it (recovery windows, absence
    timers, session gaps) have fired. Read from the worker's `cem_watermark_lag_seconds` (wall
    clock minus watermark, refreshed every few seconds) on `metrics_port`."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return False  # not serving yet
    lags = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("cem_watermark_lag_seconds{")]
    return bool(lags) and max(lags) <= lateness_ms / 1000 + slack_s


def other_readers(settings, topics: list[str]) -> list[str]:
    """Consumer groups other than this test's worker and landing groups that committed offsets on
    `topics` (which every test creates afresh): a role left running by an earlier test reads this
    test's events too, and a failure it causes must name it rather than look like a product bug."""
    from confluent_kafka.admin import AdminClient
    from cem.kafka.admin import committed_total
    kafka = KafkaConnection.from_settings(settings)
    admin = AdminClient(kafka.client_config())  # kept referenced until the answer is in
    listed = admin.list_consumer_groups(request_timeout=10).result()
    if listed.errors:
        raise RuntimeError(f"could not list the consumer groups: {listed.errors}")
    ours = {settings.app_id, f"{settings.app_id}-landing"}
    return sorted(g.group_id for g in listed.valid
                  if g.group_id not in ours and committed_total(kafka, g.group_id, topics) > 0)


def end_offsets(kafka: KafkaConnection, topic: str) -> int:
    c = Consumer(kafka.client_config(**{"group.id": "cem-test-offsets"}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    """True when `url` answers 2xx (for waiting on a process's HTTP endpoint)."""
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """A process's resident memory now (MB), from /proc."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


__all__ = ["rss_mb", "start", "stop_role", "caught_up", "wait_caught_up", "end_offsets", "wait_until", "free_port",
           "http_ok", "event_time_at_wall_clock", "other_readers"]


def read_topic(kafka: KafkaConnection, topic: str, timeout: float = 60.0) -> list:
    """Every record currently in `topic` (confluent-kafka Message objects), from offset 0."""
    from cem.kafka.topic_reader import read_to_end
    return list(read_to_end(kafka, topic, timeout=timeout))


def raw_events(kafka: KafkaConnection, topic: str) -> list[dict]:
    from cem.schemas.registry import default_registry
    from cem.schemas.serde import decode_record
    reg = default_registry()
    reader = reg.latest("touchpoint").parsed
    return [e for m in read_topic(kafka, topic) for e in decode_record(m.value(), reg, reader).events]


def dlq_records(kafka: KafkaConnection) -> list[tuple[dict, bytes]]:
    from cem.settings import DLQ_TOPIC
    from cem.kafka.dlq import headers_dict
    return [(headers_dict(m.headers()), m.value()) for m in read_topic(kafka, DLQ_TOPIC)]
