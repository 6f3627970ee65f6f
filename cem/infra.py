"""Local infrastructure for tests, CI and `make demo`: the Kafka broker started by
scripts/kafka.sh from Maven Central jars, and the cem topics on it."""
from __future__ import annotations

import subprocess
from pathlib import Path

from .settings import ALL_TOPICS, Settings

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "scripts" / "kafka.sh"


def kafka(action: str, port: int | None = None) -> int:
    """Run `scripts/kafka.sh <action>`; returns its exit code (output goes to the terminal)."""
    env = None
    if port is not None:
        import os
        env = dict(os.environ, CEM_KAFKA_PORT=str(port))
    return subprocess.call(["bash", str(KAFKA_SH), action], env=env)


def create_topics(settings: Settings) -> list[str]:
    from cem.connectors.kafka_admin import ensure_topics
    from .settings import FIXED_PARTITIONS, TOPIC_CONFIGS

    created = []
    plain = {t: FIXED_PARTITIONS.get(t, settings.topic_partitions) for t in ALL_TOPICS if t not in TOPIC_CONFIGS}
    created += ensure_topics(settings.kafka_bootstrap, plain)
    for topic, config in TOPIC_CONFIGS.items():
        created += ensure_topics(settings.kafka_bootstrap, {topic: settings.topic_partitions}, config=config)
    return created
