"""Kafka SASL/TLS and ClickHouse TLS settings reach every client's config (issue 11)."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from cem.kafka import security
from cem.kafka.publisher import producer_config
from cem.settings import Settings
from cem.sinks.clickhouse import client
from cem.sinks.landing import consumer_config


@pytest.fixture()
def secured(tmp_path):
    import ssl
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")  # a real PEM bundle
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                 kafka_sasl_username="cem", kafka_sasl_password=SecretStr("s3cret"), kafka_ssl_ca_location=ca,
                 clickhouse_dsn="https://cem:pw@ch.example:8443/default", clickhouse_ca_cert=ca,
                 clickhouse_tls_verify=True, data_dir=tmp_path)
    security.configure(s)
    yield s, ca
    security.configure(Settings(data_dir=tmp_path))  # back to PLAINTEXT for the other tests


def test_every_kafka_client_config_carries_sasl_and_tls(secured):
    s, ca = secured
    want = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "cem",
            "sasl.password": "s3cret", "ssl.ca.location": str(ca)}
    for cfg in (producer_config("b:9092"), consumer_config("b:9092", "g"), security.client_config("b:9092"),
                security.client_config("b:9092", **{"group.id": "x"})):
        assert want.items() <= cfg.items(), cfg
        assert cfg["bootstrap.servers"] == "b:9092"


def test_faust_gets_the_same_credentials(secured):
    import faust
    s, _ = secured
    cred = security.faust_credentials(s)
    assert isinstance(cred, faust.SASLCredentials)
    assert cred.username == "cem" and cred.password == "s3cret" and cred.ssl_context is not None
    from cem.streams.app import create_app
    app = create_app(s)
    assert app.conf.broker_credentials is cred or app.conf.broker_credentials.username == "cem"


def test_clickhouse_https_gets_the_ca_and_verification(secured):
    s, ca = secured
    assert client.TLS_OPTIONS == {"verify": True, "ca_cert": str(ca)}
    assert security.clickhouse_options(Settings(clickhouse_dsn="http://x:8123", data_dir=s.data_dir)) == {}


def test_plaintext_adds_nothing(tmp_path):
    assert security.configure(Settings(data_dir=tmp_path)) == {}
    assert security.client_config("b:9092") == {"bootstrap.servers": "b:9092"}
    with pytest.raises(ValueError):
        Settings(kafka_security_protocol="TLS", data_dir=tmp_path)  # says which values are allowed
