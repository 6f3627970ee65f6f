"""Shared fixtures. Integration tests run against a real Kafka broker (KRaft, started from the
Maven Central jars by scripts/kafka.sh on a test port, or CEM_KAFKA_BOOTSTRAP if set) and real
ClickHouse (chdb in a temporary directory, owned by one process at a time)."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

# Property tests check results, not speed: on a loaded 2-core CI machine an example can take
# longer than hypothesis's default 200 ms deadline or trip its too-slow health check, which fails
# a correct test. Speed is measured by `cem bench`, never by a test.
hypothesis_settings.register_profile("cem", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("cem")

REPO = Path(__file__).resolve().parent.parent
TEST_KAFKA_PORT = os.environ.get("CEM_TEST_KAFKA_PORT", "19092")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    given = os.environ.get("CEM_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    env = dict(os.environ, CEM_KAFKA_PORT=TEST_KAFKA_PORT)
    script = str(REPO / "scripts" / "kafka.sh")
    subprocess.run(["bash", script, "wipe"], env=env, check=False, capture_output=True)
    started = subprocess.run(["bash", script, "up"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"local Kafka did not start:\n{started.stdout}\n{started.stderr}")
    yield f"127.0.0.1:{TEST_KAFKA_PORT}"
    subprocess.run(["bash", script, "down"], env=env, check=False)


@pytest.fixture()
def cem_settings(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings for one test: fresh cem topics on the broker, own consumer groups, own chdb."""
    from cem.settings import Settings
    from tests.support.topics import recreate_topics

    for key in [k for k in os.environ if k.startswith("CEM_")]:
        monkeypatch.delenv(key)
    settings = Settings(data_dir=tmp_path / "data", kafka_bootstrap=kafka_bootstrap,
                        app_id=f"cem-test-{uuid.uuid4().hex[:8]}", topic_partitions=4,
                        sink_max_seconds=0.5)
    recreate_topics(settings)
    return settings
