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

import clickhouse_connect

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
        except Exception as err:
            if "Another server instance" in str(err) or "Cannot lock file" in str(err):
                raise ClickHouseUnavailable(
                    f"{dsn} is owned by another process (embedded ClickHouse is single-process); "
                    "stop the running `cem sink`/`cem demo`, or query through it with `cem query`"
                ) from err
            raise
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return clickhouse_connect.get_client(dsn=dsn, **tls.options(dsn))
        except Exception as err:  # noqa: BLE001 - re-raised below with the cause
            last = err
            log.warning("ClickHouse %s not reachable (attempt %d/%d): %s", dsn, attempt + 1, attempts, err)
            time.sleep(backoff * (2 ** attempt))
    raise ClickHouseUnavailable(f"ClickHouse at {dsn} not reachable after {attempts} attempts") from last
