"""An in-memory stand-in for the customer stage's row publisher, for unit tests of pure stage
code: it records every (topic, key, row) in publish order; flush does nothing."""
from __future__ import annotations


class Rows:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict]] = []

    def publish(self, topic: str, key: str, row: dict) -> None:
        self.rows.append((topic, key, row))

    def flush(self) -> None:
        pass
