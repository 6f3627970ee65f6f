"""Fresh cem topics for one test's settings on the shared test broker."""
from __future__ import annotations

import time
from typing import Iterable

from cem.kafka.admin import delete_topics
from cem.kafka.connection import KafkaConnection
from cem.ops.infra import create_topics
from cem.settings import ALL_TOPICS, Settings


def recreate_topics(settings: Settings, extra: Iterable[str] = ()) -> None:
    """Delete every cem topic (and `extra`) and create them again with the settings' partitions."""
    delete_topics(KafkaConnection.from_settings(settings), [*ALL_TOPICS, *extra])
    for _ in range(50):  # deletion is asynchronous in KRaft
        try:
            create_topics(settings)
            return
        except Exception:  # noqa: BLE001 - "marked for deletion": try again shortly
            time.sleep(0.2)
    create_topics(settings)  # the last try says what is wrong
