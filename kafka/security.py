"""Transport security settings handed to every client: Kafka (confluent-kafka/librdkafka and
Faust's aiokafka) and ClickHouse (clickhouse-connect).

A process calls `configure(settings)` once at start (every `cem` command does, through the CLI);
from then on `client_config(bootstrap, …)` — the base of every confluent-kafka Producer,
Consumer and AdminClient config in cem — carries `security.protocol`, SASL and TLS properties,
`faust_credentials(settings)` gives the Faust app the same, and `clickhouse_options(settings)` the
ClickHouse client's TLS verification. With the defaults (PLAINTEXT, no CA) nothing is added.
"""
from __future__ import annotations

import ssl
from typing import Any

_SECURITY: dict[str, Any] = {}


def kafka_properties(settings: Any) -> dict[str, Any]:
    """librdkafka properties for the configured security protocol (pure)."""
    proto = settings.kafka_security_protocol.upper()
    props: dict[str, Any] = {}
    if proto == "PLAINTEXT":
        return props
    props["security.protocol"] = proto
    if proto.startswith("SASL"):
        props["sasl.mechanism"] = settings.kafka_sasl_mechanism
        props["sasl.username"] = settings.kafka_sasl_username
        props["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if proto.endswith("SSL") and settings.kafka_ssl_ca_location:
        props["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    return props


def configure(settings: Any) -> dict[str, Any]:
    """Remember this process's Kafka security properties and ClickHouse TLS options; returns the
    Kafka properties."""
    from cem.sinks.clickhouse import client
    _SECURITY.clear()
    _SECURITY.update(kafka_properties(settings))
    client.TLS_OPTIONS.clear()
    client.TLS_OPTIONS.update(clickhouse_options(settings))
    return dict(_SECURITY)


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """`bootstrap.servers`, the configured security properties, then `extra`."""
    return {"bootstrap.servers": bootstrap, **_SECURITY, **extra}


def faust_credentials(settings: Any) -> Any:
    """`broker_credentials` for faust.App (None for PLAINTEXT)."""
    import faust
    proto = settings.kafka_security_protocol.upper()
    if proto == "PLAINTEXT":
        return None
    context = None
    if proto.endswith("SSL"):
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_ca_location)
                                             if settings.kafka_ssl_ca_location else None)
    if proto.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context)


def clickhouse_options(settings: Any) -> dict[str, Any]:
    """Extra clickhouse-connect arguments: TLS verification and CA for https DSNs."""
    if not settings.clickhouse.startswith("https://"):
        return {}
    opts: dict[str, Any] = {"verify": settings.clickhouse_tls_verify}
    if settings.clickhouse_ca_cert:
        opts["ca_cert"] = str(settings.clickhouse_ca_cert)
    return opts
