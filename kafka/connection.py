"""How a process reaches Kafka: one frozen `KafkaConnection` (bootstrap servers, security
protocol, SASL, TLS CA) built once at each role's composition root (`KafkaConnection.from_settings`)
and passed to every function or class that opens a Kafka client.

Contract:
- There is no module state and no default connection: every confluent-kafka Producer, Consumer
  and AdminClient config in cem comes from `KafkaConnection.client_config(...)`, and the Faust app
  takes `faust_broker()` / `faust_credentials()`. A process cannot open a client without having
  been handed a connection, so a missed setup step fails loudly instead of falling back to
  PLAINTEXT. `security_protocol` has no default either; PLAINTEXT is a choice written down
  (`KafkaConnection.plaintext(bootstrap)` or CEM_KAFKA_SECURITY_PROTOCOL's default).
- The SASL password is kept out of `repr` (and so out of logs and tracebacks).
- librdkafka's own log lines go through Python logging (logger `cem.kafka.librdkafka`) instead of
  stderr, at levels chosen for an operator: see `LibrdkafkaLog`.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: librdkafka facilities (the log line's first field) that report a configuration mistake: kept
#: at WARNING whatever their librdkafka level, since they never heal by themselves.
_CONFIG_FACILITIES = frozenset({"CONFWARN", "CONFIG"})


def librdkafka_level(level: int, facility: str) -> int:
    """The Python level a librdkafka log line is logged at (pure).

    confluent-kafka hands its lines over at Python levels (syslog emerg..err -> CRITICAL/ERROR,
    warning -> WARNING, notice/info -> INFO, debug -> DEBUG). librdkafka's warnings are almost all
    transient broker states it retries itself (`GETPID … Coordinator load in progress`, a broker
    restarting, a request timing out): DEBUG, so normal output stays readable. Its errors (a refused
    connection, failed authentication or TLS handshake) are WARNING: an operator sees them, but
    the client keeps retrying and cem raises its own error when an operation finally fails.
    Configuration warnings stay WARNING.
    """
    if facility in _CONFIG_FACILITIES:
        return max(level, logging.WARNING)
    if level >= logging.ERROR:
        return logging.WARNING
    return logging.DEBUG


class LibrdkafkaLog:
    """The `logger` handed to every confluent-kafka client: confluent-kafka calls
    `log(level, "%s [%s] %s", facility, client_name, message)`; this re-levels the line
    (`librdkafka_level`) and logs it on `cem.kafka.librdkafka`.

    While a broker is away librdkafka repeats its error several times a second per client
    (`FAIL … Connection refused`): a warning of one client and facility is logged once per
    `repeat_seconds`, its repeats meanwhile at DEBUG, so an outage reads as a few lines."""

    def __init__(self, logger: logging.Logger | None = None, repeat_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger or logging.getLogger("cem.kafka.librdkafka")
        self._repeat = repeat_seconds
        self._clock = clock
        self._warned: dict[tuple[str, str], float] = {}  # (facility, client) -> last warning
        self._lock = threading.Lock()  # clients log from several threads

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        facility = str(args[0]) if args else ""
        level = librdkafka_level(level, facility)
        if level >= logging.WARNING:
            key = (facility, str(args[1]) if len(args) > 1 else "")
            now = self._clock()
            with self._lock:
                if now - self._warned.get(key, -self._repeat) < self._repeat:
                    level = logging.DEBUG
                else:
                    self._warned[key] = now
        self.logger.log(level, msg, *args, **kwargs)


LIBRDKAFKA_LOG = LibrdkafkaLog()


@dataclass(frozen=True)
class KafkaConnection:
    """Where and how this process reaches Kafka. Build it with `from_settings` at the role's entry
    point; pass it down."""

    bootstrap: str
    security_protocol: str
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_ca_location: str | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ValueError("Kafka bootstrap servers are empty; set CEM_KAFKA_BOOTSTRAP (host:port[,host:port])")
        if self.security_protocol not in PROTOCOLS:
            raise ValueError(f"Kafka security protocol {self.security_protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"SASL mechanism {self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
        if self.sasl and not self.sasl_username:
            raise ValueError(f"{self.security_protocol} needs a SASL user: set CEM_KAFKA_SASL_USERNAME "
                             "and CEM_KAFKA_SASL_PASSWORD")

    @classmethod
    def from_settings(cls, settings: Any) -> KafkaConnection:
        """The connection a `cem.settings.Settings` describes (CEM_KAFKA_* variables)."""
        ca = settings.kafka_ssl_ca_location
        return cls(bootstrap=settings.kafka_bootstrap,
                   security_protocol=settings.kafka_security_protocol.upper(),
                   sasl_mechanism=settings.kafka_sasl_mechanism,
                   sasl_username=settings.kafka_sasl_username,
                   sasl_password=settings.kafka_sasl_password.get_secret_value(),
                   ssl_ca_location=str(ca) if ca else None)

    @classmethod
    def plaintext(cls, bootstrap: str) -> KafkaConnection:
        """An unauthenticated, unencrypted connection (a local or test broker)."""
        return cls(bootstrap=bootstrap, security_protocol="PLAINTEXT")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def security_properties(self) -> dict[str, Any]:
        """librdkafka properties of the security protocol (empty for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        props: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.sasl:
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.username"] = self.sasl_username
            props["sasl.password"] = self.sasl_password
        if self.tls and self.ssl_ca_location:
            props["ssl.ca.location"] = self.ssl_ca_location
        return props

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """The base of every confluent-kafka client config: `bootstrap.servers`, the security
        properties, librdkafka's logs routed to Python logging, then `extra` (dotted librdkafka
        names: pass them as `**{"group.id": …}`)."""
        return {"bootstrap.servers": self.bootstrap, **self.security_properties(),
                "logger": LIBRDKAFKA_LOG, **extra}

    def faust_broker(self) -> str:
        """faust.App's `broker` URL."""
        return f"kafka://{self.bootstrap}"

    def faust_credentials(self) -> Any:
        """faust.App's `broker_credentials` (None for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust  # only the worker (and its tests) pay for importing Faust
        context = ssl.create_default_context(cafile=self.ssl_ca_location) if self.tls else None
        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         mechanism=self.sasl_mechanism, ssl_context=context)
        return faust.SSLCredentials(context)
