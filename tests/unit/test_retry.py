"""Bounded retries and error classification (issue 22): capped exponential backoff, errors told
apart by type and code (never by message text), and a typed terminal error that names what
failed and what to do."""
from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from confluent_kafka import KafkaError, KafkaException

from cem.kafka.errors import is_permanent, kafka_error
from cem.kafka.publisher import DeliveryFailed
from cem.retry import Backoff
from cem.sinks.landing import INSERT_BACKOFF, refuses_data
from cem.streams.agents.ingest import FORWARD_BACKOFF, ForwardRefused, forward_retry_wait


def test_backoff_doubles_up_to_its_cap_and_never_overflows():
    b = Backoff(first=0.2, cap=10.0)
    assert [b.delay(n) for n in range(1, 9)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0])
    assert b.delay(10_000) == 10.0  # a week-long outage: still the cap, no OverflowError
    assert not b.exhausted(10_000)  # unbounded: the caller documents why it retries forever


def test_a_bounded_backoff_is_exhausted_after_its_attempts():
    b = Backoff(first=1.0, cap=30.0, attempts=3)
    assert [b.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize("kwargs", [dict(first=0, cap=1), dict(first=2, cap=1), dict(first=1, cap=2, factor=0.5),
                                    dict(first=1, cap=2, attempts=0)])
def test_a_nonsensical_backoff_is_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_attempts_count_from_one():
    with pytest.raises(ValueError):
        Backoff(first=1, cap=2).delay(0)


@pytest.mark.parametrize("code, permanent", [
    (KafkaError._MSG_TIMED_OUT, False), (KafkaError._TRANSPORT, False), (KafkaError.NOT_LEADER_FOR_PARTITION, False),
    (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, False), (KafkaError.REQUEST_TIMED_OUT, False),
    (KafkaError.MSG_SIZE_TOO_LARGE, True), (KafkaError.TOPIC_AUTHORIZATION_FAILED, True),
    (KafkaError._UNKNOWN_TOPIC, True), (KafkaError.SASL_AUTHENTICATION_FAILED, True),
])
def test_kafka_errors_are_told_apart_by_code(code, permanent):
    assert is_permanent(KafkaError(code)) is permanent


def test_a_fatal_kafka_error_is_permanent_whatever_its_code():
    assert is_permanent(KafkaError(KafkaError._TRANSPORT, fatal=True))
    assert not is_permanent(RuntimeError("MSG_SIZE_TOO_LARGE"))  # text is never looked at


def test_the_kafka_error_of_an_exception():
    err = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)
    assert kafka_error(KafkaException(err)).code() == KafkaError.TOPIC_ALREADY_EXISTS
    assert kafka_error(RuntimeError("x")) is None and kafka_error(KafkaException()) is None


def test_a_transient_forward_failure_waits_longer_each_round_up_to_the_cap():
    err = DeliveryFailed("3 record(s) failed: Local: Message timed out")
    waits = [forward_retry_wait(err, n, "Ingest", 3) for n in range(1, 8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0] == [FORWARD_BACKOFF.delay(n) for n in range(1, 8)]


def test_a_permanent_forward_failure_stops_with_what_to_fix():
    err = DeliveryFailed("1 record(s) failed: Broker: Message size too large", permanent=True)
    with pytest.raises(ForwardRefused) as raised:
        forward_retry_wait(err, 1, "Coordinator", 7)
    text = str(raised.value)
    assert "Coordinator" in text and "7 input record(s)" in text and "Message size too large" in text
    assert "cem topics create" in text and "restart the worker" in text
    assert raised.value.__cause__ is err


@pytest.mark.parametrize("err, refused", [
    (DatabaseError("Code: 117. DB::Exception: …", code=117, name="INCORRECT_DATA"), True),
    (DatabaseError("avro::Exception", code=1001, name="STD_EXCEPTION"), True),
    (DatabaseError("Code: 6. Cannot parse", code=6), True),
    (DatabaseError("Code: 252. Too many parts", code=252, name="TOO_MANY_PARTS"), False),  # overload: retry
    (DatabaseError("Code: 241. Memory limit", code=241), False),
    (OperationalError("Network Error: connection refused"), False),  # server away: retry
    (ConnectionError("ClickHouse unavailable (injected by cem chaos)"), False),
    (RuntimeError("CANNOT_PARSE_TEXT INCORRECT_DATA avro::Exception"), False),  # text is never looked at
])
def test_clickhouse_insert_errors_are_told_apart_by_type_and_code(err, refused):
    assert refuses_data(err) is refused


def test_landing_retries_an_outage_with_capped_backoff():
    assert INSERT_BACKOFF.attempts is None  # by design: ClickHouse down must neither drop rows nor crash
    assert INSERT_BACKOFF.delay(1) == pytest.approx(0.2) and INSERT_BACKOFF.delay(100) == 10.0
