"""A simple, seeded touchpoint generator for the demo, tests and benchmarks (pure).

Not the realistic simulator (issue 4): it draws valid events of every channel and type with
plausible attributes and identifiers, deterministic for a given seed.
"""
from __future__ import annotations

import random
import uuid
from typing import Any, Iterator

from cem.events import CHANNELS, EVENT_TYPES

_QUERIES = ("red dress", "running shoes", "usb-c cable", "garden chair", "xqzzt", "lamp")


def _attributes(rng: random.Random, channel: str, event_type: str) -> dict[str, Any]:
    if channel == "web":
        a: dict[str, Any] = {"url": f"/p/{rng.randrange(500)}"}
        if event_type == "search":
            a.update(query=rng.choice(_QUERIES), results_count=rng.choice((0, 3, 12, 40)))
        elif event_type == "click":
            a.update(element=rng.choice(("#pay", "#add", "#search")), x=rng.randrange(1280), y=rng.randrange(800))
        elif event_type in ("add_to_cart", "order_placed", "payment_failed"):
            a.update(product_id=f"sku-{rng.randrange(2000)}", amount_cents=rng.randrange(500, 50000), currency="EUR")
        return a
    if channel == "store":
        if event_type == "queue_wait":
            return {"wait_seconds": rng.randrange(30, 1200)}
        if event_type in ("purchase", "item_unavailable"):
            return {"product_id": f"sku-{rng.randrange(2000)}", "amount_cents": rng.randrange(500, 50000),
                    "currency": "EUR", "items": rng.randrange(1, 6), "terminal_id": f"pos-{rng.randrange(8)}"}
        return {"terminal_id": f"pos-{rng.randrange(8)}"}
    if channel == "phone":
        a = {"call_id": f"call-{rng.randrange(10**9)}"}
        if event_type == "hold":
            a["hold_seconds"] = rng.randrange(10, 900)
        elif event_type == "call_ended":
            a.update(reason=rng.choice(("order_status", "refund", "complaint")), resolved=rng.random() < 0.6,
                     duration_seconds=rng.randrange(60, 1800))
        elif event_type == "ivr_step":
            a["ivr_step"] = rng.choice(("menu", "orders", "returns"))
        return a
    if channel == "returns":
        return {"rma_id": f"rma-{rng.randrange(10**6)}",
                "reason": rng.choice(("wrong_item", "defective", "size", "changed_mind")),
                "product_id": f"sku-{rng.randrange(2000)}", "amount_cents": rng.randrange(500, 50000),
                "currency": "EUR"}
    if channel == "email":
        return {"thread_id": f"thread-{rng.randrange(10**6)}", "mailbox": "service"}
    if event_type == "survey_response":
        return {"survey_id": f"s-{rng.randrange(100)}", "nps": rng.randrange(0, 11), "csat": rng.randrange(1, 6),
                "comment": rng.choice(("", "slow delivery", "great staff", "never again"))}
    return {"rating": rng.randrange(1, 6), "comment": "ok"}


def touchpoints(count: int, *, customers: int = 1000, seed: int = 7, start_ms: int,
                spread_ms: int = 3_600_000, channels: tuple[str, ...] = CHANNELS) -> Iterator[dict[str, Any]]:
    """`count` valid touchpoints round-robin over `channels`, event times in [start, start+spread)."""
    rng = random.Random(seed)
    types = {ch: sorted(EVENT_TYPES[ch]) for ch in channels}
    for i in range(count):
        channel = channels[i % len(channels)]
        event_type = rng.choice(types[channel])
        c = rng.randrange(customers)
        ids: dict[str, Any] = {"anonymous_id": f"anon-{c}"} if channel == "web" else {}
        if channel in ("store", "feedback"):
            ids["loyalty_id"] = f"L{c:07d}"
        if channel == "email":
            ids["email_hash"] = f"e{c:08x}"
        if channel in ("phone", "returns"):
            ids["phone_hash" if channel == "phone" else "order_id"] = f"h{c:08x}"
        yield {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_type": event_type,
            "channel": channel,
            "occurred_at": start_ms + rng.randrange(spread_ms),
            "received_at": start_ms + spread_ms,
            "source": f"gen-{channel}",
            "identifiers": ids,
            "store_id": f"store-{rng.randrange(20)}" if channel == "store" else None,
            channel: _attributes(rng, channel, event_type),
        }
