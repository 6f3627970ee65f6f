"""Identity keys (pure).

Until the identifier graph lands (issue 5), a touchpoint's customer key is its strongest
identifier, by a fixed precedence; the key decides the partition of cem.touchpoints, so every
event of one known customer meets the same downstream agent instance.
"""
from __future__ import annotations

from typing import Any, Mapping

#: Strongest first: a login id beats a loyalty card beats a hashed email ... beats a cookie.
PRECEDENCE: tuple[str, ...] = ("customer_id", "loyalty_id", "email_hash", "phone_hash",
                               "device_id", "anonymous_id", "order_id")

#: Values that never identify anybody (Segment-style blocked values).
BLOCKED_VALUES: frozenset[str] = frozenset({"", "0", "-1", "null", "none", "undefined",
                                            "anonymous", "unknown", "n/a"})


def is_blocked(value: str | None) -> bool:
    if value is None:
        return True
    v = value.strip().lower()
    return v in BLOCKED_VALUES or set(v) <= {"0", "-"}


def customer_key(identifiers: Mapping[str, Any]) -> str:
    """`kind:value` of the strongest usable identifier; 'unidentified' if none is usable."""
    for kind in PRECEDENCE:
        value = identifiers.get(kind)
        if value and not is_blocked(value):
            return f"{kind}:{value}"
    return "unidentified"
