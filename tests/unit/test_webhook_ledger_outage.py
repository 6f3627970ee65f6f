"""`cem notify` rides out a broker restart: the ledger flush waits round after round before it
gives up, and a retry round whose ledger cannot be read is skipped instead of stopping the
dispatcher (both seen as `notify (exit 1)` in a chaos run while the broker was down)."""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from cem.webhooks import RetryPolicy
from cem.sinks.webhooks import Dispatcher, _flush_ledger


class SlowAcks:
    """A producer whose queue drains after `rounds_down` flush calls (a broker coming back)."""

    def __init__(self, rounds_down: int):
        self.rounds_down = rounds_down
        self.calls = 0

    def flush(self, timeout: float) -> int:
        self.calls += 1
        return 3 if self.calls <= self.rounds_down else 0


def test_the_ledger_flush_waits_out_a_restart_then_returns():
    producer = SlowAcks(rounds_down=4)
    _flush_ledger(producer, rounds=10, wait=0.0)  # type: ignore[arg-type]
    assert producer.calls == 5


def test_the_ledger_flush_gives_up_with_a_clear_error_after_its_rounds():
    producer = SlowAcks(rounds_down=99)
    with pytest.raises(RuntimeError, match="not acknowledged by Kafka within .* is the broker up"):
        _flush_ledger(producer, rounds=3, wait=0.0)  # type: ignore[arg-type]
    assert producer.calls == 3


def test_a_retry_round_is_skipped_while_the_ledger_cannot_be_read():
    def unreadable():
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    d = Dispatcher(None, SlowAcks(0), "cem.alerts", "cem.alerts.deliveries", {}, b"k",  # type: ignore[arg-type]
                   RetryPolicy(3, 1.0, 10.0), None, refresh=unreadable)  # type: ignore[arg-type]
    d.retry_round()  # does not raise
    assert d.expired == 0
