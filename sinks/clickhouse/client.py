"""The one way cem reaches ClickHouse: clickhouse-connect, for `chdb:///path` (embedded, the
real engine in-process) and `http(s)://` (a server) alike (STYLE.md rule 5).

Embedded ClickHouse is single-process: only the landing role (`cem sink`) and one-shot commands
run while no sink is running may open a chdb path (DESIGN.md).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ProgrammingError

from cem.retry import Backoff

log = logging.getLogger(__name__)


class ClickHouse(Protocol):
    """The subset of clickhouse-connect's client cem uses."""

    # (settings is keyword-only: clickhouse-connect's third positional parameter is `data`)
    def command(self, cmd: str, parameters: Any = None, *, settings: Any = None) -> Any: ...
    def query(self, query: str, parameters: Any = None, settings: Any = None) -> Any: ...
    def raw_insert(self, table: str, column_names: Any = None, insert_block: Any = None,
                   settings: Any = None, fmt: str | None = None) -> Any: ...
    def close(self) -> None: ...


class ClickHouseUnavailable(RuntimeError):
    """ClickHouse could not be reached or refused an insert after bounded retries."""


@dataclass(frozen=True)
class ClickHouseTLS:
    """TLS of an https:// DSN: verify the server certificate (against `ca_cert`, or the system's
    CAs). Plain http and embedded DSNs ignore it."""

    verify: bool = True
    ca_cert: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ClickHouseTLS:
        """CEM_CLICKHOUSE_TLS_VERIFY and CEM_CLICKHOUSE_CA_CERT."""
        ca = settings.clickhouse_ca_cert
        return cls(verify=settings.clickhouse_tls_verify, ca_cert=str(ca) if ca else None)

    def options(self, dsn: str) -> dict[str, Any]:
        """clickhouse-connect arguments for `dsn` (pure; empty unless https)."""
        if not dsn.startswith("https://"):
            return {}
        opts: dict[str, Any] = {"verify": self.verify}
        if self.ca_cert:
            opts["ca_cert"] = self.ca_cert
        return opts


def connect_settings(settings: Any, **kwargs: Any) -> ClickHouse:
    """Open the ClickHouse that `settings` names (CEM_CLICKHOUSE_DSN, its TLS settings)."""
    return connect(settings.clickhouse, tls=ClickHouseTLS.from_settings(settings), **kwargs)


def connect(dsn: str, *, tls: ClickHouseTLS = ClickHouseTLS(), attempts: int = 5, backoff: float = 0.5) -> ClickHouse:
    """Open a client for `dsn`, retrying a bounded number of times for servers still starting.
    An https DSN is verified as `tls` says (by default against the system's CAs)."""
    if dsn.startswith("chdb://"):
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except ProgrammingError as err:  # chdb could not open the engine on that path
            raise ClickHouseUnavailable(
                f"embedded ClickHouse at {dsn} cannot be opened: {err}. It is single-process: if a `cem sink` "
                "or `cem demo` is running it owns the path — stop it, or query through it with `cem query`"
            ) from err
    policy = Backoff(first=backoff, cap=max(backoff, 30.0), attempts=attempts)
    where = redacted(dsn)
    attempt = 0
    while True:
        try:
            return clickhouse_connect.get_client(dsn=dsn, **tls.options(dsn))
        except Exception as err:  # noqa: BLE001 - a server still starting: retried, then re-raised with the cause
            attempt += 1
            if policy.exhausted(attempt):
                raise ClickHouseUnavailable(
                    f"ClickHouse at {where} not reachable after {attempt} attempts: {err}; check that the server "
                    "runs and CEM_CLICKHOUSE_DSN (host, port, user, password) and its TLS settings") from err
            delay = policy.delay(attempt)
            log.warning("ClickHouse %s not reachable (attempt %d/%d), retry in %.1f s: %s",
                        where, attempt, attempts, delay, err)
            time.sleep(delay)


def redacted(dsn: str) -> str:
    """`dsn` with its password replaced by ***, fit for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
