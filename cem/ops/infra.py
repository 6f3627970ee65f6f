"""Local infrastructure for tests, CI and `make demo`: the Kafka broker started by
scripts/kafka.sh from Maven Central jars, and the cem topics on it."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from cem.kafka.admin import delete_topics, ensure_topics
from cem.kafka.connection import KafkaConnection
from cem.settings import ALL_TOPICS, FIXED_PARTITIONS, Settings, merge_state_topic, state_topic, topic_configs

REPO = Path(__file__).resolve().parents[2]  # cem/ops/infra.py -> the repository
KAFKA_SH = REPO / "scripts" / "kafka.sh"


def kafka(action: str, port: int | None = None, run_dir: Path | None = None, quiet: bool = False) -> int:
    """Run `scripts/kafka.sh <action>`; returns its exit code. Its messages go to stderr, so a
    command's stdout stays its own (`cem bench --json | jq …`); `quiet`: only if it fails.
    `port`/`run_dir`: a broker other than the configured one (CEM_KAFKA_PORT, data under .cache/kafka)."""
    env = dict(os.environ)
    if port is not None:
        env["CEM_KAFKA_PORT"] = str(port)
    if run_dir is not None:
        env["CEM_KAFKA_RUN_DIR"] = str(run_dir)
    if not quiet:
        return subprocess.call(["bash", str(KAFKA_SH), action], env=env, stdout=sys.stderr)
    done = subprocess.run(["bash", str(KAFKA_SH), action], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
    return done.returncode


def free_broker_port() -> int:
    """A port with its successor also free (scripts/kafka.sh puts the controller on port + 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1 for a private Kafka broker")


def create_topics(settings: Settings) -> list[str]:

    conn = KafkaConnection.from_settings(settings)
    created = []
    configs = topic_configs(settings)
    plain = {t: FIXED_PARTITIONS.get(t, settings.topic_partitions) for t in ALL_TOPICS if t not in configs}
    created += ensure_topics(conn, plain)
    for topic, config in configs.items():
        created += ensure_topics(conn, {topic: settings.topic_partitions}, config=config)
    return created


def ensure_broker() -> bool | None:
    """Start the local broker unless one runs: True if started here (stop it after), False if it
    was running already, None if it could not start."""
    if kafka("status") == 0:
        return False
    return True if kafka("up") == 0 else None


def fresh_run(settings: Settings, name: str, extra_topics: Sequence[str] = (), **overrides: object) -> Settings:
    """Settings for a clean run under <data dir>/<name>: its folder emptied, every cem topic and
    the worker's state changelog recreated (a demo or bench starts from a clean slate)."""

    run_dir = settings.data_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    settings = settings.model_copy(update={"data_dir": run_dir, "clickhouse_dsn": "", **overrides})
    conn = KafkaConnection.from_settings(settings)
    delete_topics(conn, [*ALL_TOPICS, *extra_topics, state_topic(settings.app_id), merge_state_topic(settings.app_id)])
    create_topics(settings)
    if extra_topics:
        ensure_topics(conn, {t: settings.topic_partitions for t in extra_topics})
    return settings
