import pytest
from pydantic import ValidationError

from cem.settings import Settings


def test_unknown_cem_variable_is_rejected(monkeypatch):
    monkeypatch.setenv("CEM_KAFKA_BOOTSTRAPP", "x:1")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "CEM_KAFKA_BOOTSTRAPP" in str(err.value)


def test_env_prefix_and_embedded_default(monkeypatch, tmp_path):
    monkeypatch.setenv("CEM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CEM_PSEUDONYMIZATION_KEY", "s3cret")
    s = Settings()
    assert s.clickhouse == f"chdb://{tmp_path / 'clickhouse'}"
    assert "s3cret" not in repr(s)
    assert s.pseudonymization_key.get_secret_value() == "s3cret"


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.topic_partitions = 9


def test_the_delivery_ledger_outlives_parked_deliveries_and_expires_after_its_retention(monkeypatch):
    from cem.settings import DELIVERIES_TOPIC, IDENTITY_MAP_TOPIC, topic_configs
    monkeypatch.setenv("CEM_WEBHOOK_LEDGER_DAYS", "2")
    monkeypatch.setenv("CEM_WEBHOOK_PARK_HOURS", "72")
    with pytest.raises(ValidationError, match="CEM_WEBHOOK_LEDGER_DAYS"):
        Settings()
    monkeypatch.setenv("CEM_WEBHOOK_LEDGER_DAYS", "14")
    configs = topic_configs(Settings())
    assert configs[DELIVERIES_TOPIC] == {"cleanup.policy": "compact,delete", "retention.ms": str(14 * 86_400_000)}
    assert configs[IDENTITY_MAP_TOPIC] == {"cleanup.policy": "compact"}  # the graph never expires
