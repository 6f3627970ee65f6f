"""Kafka SASL/TLS and ClickHouse TLS settings reach every client's config (issue 11), through an
explicit `KafkaConnection` / `ClickHouseTLS` built from the settings — no process-wide state,
no silent PLAINTEXT fallback (issue 22)."""
from __future__ import annotations

import logging
import ssl
from pathlib import Path

import faust
import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

import cem.kafka
from cem.kafka.connection import LIBRDKAFKA_LOG, KafkaConnection, librdkafka_level
from cem.kafka.publisher import producer_config
from cem.settings import Settings
from cem.sinks.clickhouse.client import ClickHouseTLS
from cem.sinks.landing import consumer_config

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")  # a real PEM bundle


@pytest.fixture(autouse=True)
def _no_cem_env(monkeypatch):
    """Settings here come from arguments only (the test run's own CEM_* variables are not settings)."""
    import os
    for key in [k for k in os.environ if k.startswith("CEM_")]:
        monkeypatch.delenv(key)


@pytest.fixture()
def secured(tmp_path) -> Settings:
    return Settings(kafka_bootstrap="b:9092", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="cem",
                    kafka_sasl_password=SecretStr("s3cret"), kafka_ssl_ca_location=CA,
                    clickhouse_dsn="https://cem:pw@ch.example:8443/default", clickhouse_ca_cert=CA,
                    clickhouse_tls_verify=False, data_dir=tmp_path)


def test_a_sasl_ssl_connection_puts_sasl_and_tls_in_every_kafka_client_config(secured):
    kafka = KafkaConnection.from_settings(secured)
    want = {"bootstrap.servers": "b:9092", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "cem", "sasl.password": "s3cret", "ssl.ca.location": str(CA)}
    for cfg in (producer_config(kafka), consumer_config(kafka, "g"), kafka.client_config(),
                kafka.client_config(**{"group.id": "x"})):
        assert want.items() <= cfg.items(), cfg
        assert cfg["logger"] is LIBRDKAFKA_LOG
    assert consumer_config(kafka, "g")["group.id"] == "g"


def test_the_password_stays_out_of_the_connections_repr(secured):
    kafka = KafkaConnection.from_settings(secured)
    assert "s3cret" not in repr(kafka) and "cem" in repr(kafka)


def test_faust_gets_the_same_credentials(secured):
    kafka = KafkaConnection.from_settings(secured)
    cred = kafka.faust_credentials()
    assert isinstance(cred, faust.SASLCredentials)
    assert (cred.username, cred.password, cred.mechanism.value) == ("cem", "s3cret", "SCRAM-SHA-256")
    assert cred.ssl_context is not None
    from cem.streams.app import create_app
    app = create_app(secured, kafka)
    assert app.conf.broker_credentials.username == "cem"
    assert [str(url) for url in app.conf.broker] == ["kafka://b:9092"]


def test_ssl_without_sasl_gives_faust_an_ssl_context(tmp_path):
    kafka = KafkaConnection(bootstrap="b:9093", security_protocol="SSL", ssl_ca_location=str(CA))
    assert kafka.security_properties() == {"security.protocol": "SSL", "ssl.ca.location": str(CA)}
    assert isinstance(kafka.faust_credentials(), faust.SSLCredentials)


def test_plaintext_is_a_written_down_choice_and_adds_nothing(tmp_path):
    kafka = KafkaConnection.plaintext("b:9092")
    assert kafka == KafkaConnection.from_settings(Settings(kafka_bootstrap="b:9092", data_dir=tmp_path))
    assert kafka.client_config() == {"bootstrap.servers": "b:9092", "logger": LIBRDKAFKA_LOG}
    assert kafka.faust_credentials() is None
    with pytest.raises(ValueError):
        Settings(kafka_security_protocol="TLS", data_dir=tmp_path)  # says which values are allowed


def test_no_client_config_can_be_built_without_a_connection():
    with pytest.raises(TypeError):
        KafkaConnection("b:9092")  # type: ignore[call-arg]  # the protocol has no default
    with pytest.raises(AttributeError):
        producer_config("b:9092")  # type: ignore[arg-type]  # a bare bootstrap string is not a connection
    with pytest.raises(AttributeError):
        consumer_config("b:9092", "g")  # type: ignore[arg-type]
    # nothing process-wide is left to configure or forget
    import cem.kafka.connection as connection
    assert not hasattr(connection, "configure") and not hasattr(connection, "client_config")
    with pytest.raises(ImportError):
        __import__("cem.kafka.security")
    assert cem.kafka  # the package itself keeps no connection state


@pytest.mark.parametrize("kwargs, complaint", [
    ({"security_protocol": "TLS"}, "is not one of"),
    ({"security_protocol": "SASL_SSL"}, "CEM_KAFKA_SASL_USERNAME"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_mechanism": "GSSAPI"}, "SASL mechanism"),
    ({"security_protocol": "PLAINTEXT", "bootstrap": ""}, "CEM_KAFKA_BOOTSTRAP"),
])
def test_an_incomplete_connection_says_what_to_set(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        KafkaConnection(**{"bootstrap": "b:9092", **kwargs})


def test_clickhouse_https_gets_the_ca_and_verification(secured):
    tls = ClickHouseTLS.from_settings(secured)
    assert tls.options(secured.clickhouse) == {"verify": False, "ca_cert": str(CA)}
    assert tls.options("http://x:8123") == {}
    assert tls.options("chdb:///tmp/x") == {}
    assert ClickHouseTLS().options("https://x:8443") == {"verify": True}


@pytest.mark.parametrize("level, facility, want", [
    (logging.WARNING, "GETPID", logging.DEBUG),  # Coordinator load in progress: transient, retried
    (logging.INFO, "REQTMOUT", logging.DEBUG),
    (logging.DEBUG, "FETCH", logging.DEBUG),
    (logging.ERROR, "FAIL", logging.WARNING),  # connection refused, TLS handshake, authentication
    (logging.CRITICAL, "ERROR", logging.WARNING),
    (logging.WARNING, "CONFWARN", logging.WARNING),  # a configuration mistake never heals
])
def test_librdkafka_lines_are_relevelled(level, facility, want):
    assert librdkafka_level(level, facility) == want


def test_librdkafka_logs_arrive_in_python_logging(caplog):
    """A client built from a connection logs through Python logging: a refused connection to a
    closed port is a librdkafka error, logged as a WARNING on cem.kafka.librdkafka (not stderr)."""
    caplog.set_level(logging.DEBUG, logger="cem.kafka.librdkafka")
    producer = Producer(KafkaConnection.plaintext("127.0.0.1:1").client_config(
        **{"reconnect.backoff.ms": 10, "message.timeout.ms": 500}))
    producer.produce("t", b"x")
    for _ in range(40):
        producer.poll(0.05)  # logs are served by poll, on this thread
        if any(r.levelno == logging.WARNING for r in caplog.records):
            break
    producer.flush(1)
    lines = [r for r in caplog.records if r.name == "cem.kafka.librdkafka"]
    assert any(r.levelno == logging.WARNING and "FAIL" in r.getMessage() for r in lines), \
        [r.getMessage() for r in lines]


def test_the_cli_refuses_an_incomplete_sasl_setup_in_one_line(tmp_path, monkeypatch):
    """A role never starts half-configured: SASL without a user is an invalid setting (exit 2)."""
    from typer.testing import CliRunner

    from cem.ops.cli import app
    monkeypatch.setenv("CEM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CEM_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["topics", "create"])
    assert result.exit_code == 2, result.output
    assert "invalid settings" in result.output and "CEM_KAFKA_SASL_USERNAME" in result.output


def test_a_repeated_librdkafka_warning_is_logged_once_per_window(caplog):
    """A broker outage: the same client's `FAIL` line many times a second is one WARNING per
    30 s; the repeats go to DEBUG. Another client or facility still warns."""
    from cem.kafka.connection import LibrdkafkaLog
    now = [100.0]
    log = LibrdkafkaLog(repeat_seconds=30.0, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="cem.kafka.librdkafka")
    fmt = "%s [%s] %s"
    for _ in range(5):
        log.log(logging.ERROR, fmt, "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:1 failed: Connection refused")
    log.log(logging.ERROR, fmt, "FAIL", "rdkafka#consumer-2", "Connect to 127.0.0.1:1 failed: Connection refused")
    log.log(logging.ERROR, fmt, "ERROR", "rdkafka#producer-1", "1/1 brokers are down")
    now[0] += 31
    log.log(logging.ERROR, fmt, "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:1 failed: Connection refused")
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 4 + [logging.WARNING] * 3
