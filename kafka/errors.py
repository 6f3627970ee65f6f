"""Which Kafka errors retrying can fix, decided by librdkafka error code (never by message text).

Transient: the broker is away, restarting, electing a leader or loading a coordinator; the
record times out in the local queue (`_MSG_TIMED_OUT`) — retrying after a wait succeeds once the
cluster is back. Permanent: the broker refuses the record itself or this client's rights
(record too large, topic missing, not authorised, failed authentication) or the producer hit a
fatal error — retrying sends the same record into the same refusal, so the caller stops with an
error saying what to fix.
"""
from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

PERMANENT_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD, KafkaError.INVALID_REQUIRED_ACKS, KafkaError._INVALID_ARG,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_EXCEPTION, KafkaError._FATAL,
})


def is_permanent(err: Any) -> bool:
    """True when retrying cannot help (`err`: a confluent_kafka.KafkaError)."""
    if not isinstance(err, KafkaError):
        return False
    return err.fatal() or err.code() in PERMANENT_CODES


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a confluent-kafka exception carries (None for any other exception)."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, KafkaError) else None


WHAT_TO_DO = ("check that the topic exists (`cem topics create`), that this role's Kafka user may write "
              "to it (ACLs, CEM_KAFKA_SASL_*), and that the broker accepts records this size (message.max.bytes)")
