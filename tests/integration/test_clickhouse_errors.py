"""ClickHouse errors as landing and `connect` see them, from the real engine (chdb) and a real
refused connection: the error codes landing treats as refused data are the ones ClickHouse
names so, a bad insert carries one of them, an unreachable server gives up after its attempts
with a typed error that hides the password."""
from __future__ import annotations

import time

import pytest

from cem.sinks.clickhouse.client import ClickHouseUnavailable, connect
from cem.sinks.landing import REFUSED_DATA_CODES, refuses_data


@pytest.fixture(scope="module")
def ch(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.mktemp('ch-errors')}")
    client.command("CREATE TABLE t (a UInt8, d Date) ENGINE = MergeTree ORDER BY a")
    yield client
    client.close()


def test_refused_data_codes_are_named_as_clickhouse_names_them(ch):
    codes = sorted(REFUSED_DATA_CODES)
    names = ch.query(f"SELECT arrayMap(c -> errorCodeToName(c), {codes})").result_rows[0][0]
    assert dict(zip(codes, names, strict=True)) == REFUSED_DATA_CODES


@pytest.mark.parametrize("fmt, data", [("CSV", b"notanumber,2024-01-01\n"), ("CSV", b"1,notadate\n"),
                                       ("Avro", b"Obj\x01garbage")])
def test_an_insert_of_bad_data_is_refused_data(ch, fmt, data):
    with pytest.raises(Exception) as raised:
        ch.raw_insert("t", ["a", "d"], insert_block=data, fmt=fmt)
    assert refuses_data(raised.value), (type(raised.value), getattr(raised.value, "code", None), raised.value)


def test_a_missing_table_is_not_refused_data(ch):
    with pytest.raises(Exception) as raised:  # an operator's fix, not the rows' fault: landing retries
        ch.raw_insert("no_such_table", ["a"], insert_block=b"1\n", fmt="CSV")
    assert not refuses_data(raised.value)


def test_an_unreachable_server_gives_up_after_its_attempts_naming_it_without_the_password():
    started = time.monotonic()
    with pytest.raises(ClickHouseUnavailable) as raised:
        connect("http://cem:s3cret@127.0.0.1:1/default", attempts=3, backoff=0.05)
    assert time.monotonic() - started < 10
    text = str(raised.value)
    assert "after 3 attempts" in text and "cem:***@127.0.0.1:1" in text and "s3cret" not in text
    assert "CEM_CLICKHOUSE_DSN" in text and raised.value.__cause__ is not None
