"""Read ClickHouse in tests, after the process that owned the chdb directory has stopped."""
from __future__ import annotations

from contextlib import contextmanager

from cem.sinks.clickhouse.client import connect_settings


@contextmanager
def clickhouse(settings):
    client = connect_settings(settings)
    try:
        yield client
    finally:
        client.close()


def scalar(settings, sql: str):
    with clickhouse(settings) as c:
        return c.query(sql).result_rows[0][0]
