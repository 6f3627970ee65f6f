"""The worker's GC policy: survivors of a full collection are frozen (later collections skip
them), and once per period a full collection scans everything, so cycles in old state are
still freed."""
from __future__ import annotations

import gc
import weakref

from cem.streams.gc_policy import FreezingGC


class Node:
    def __init__(self) -> None:
        self.other: object = None


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_survivors_are_frozen_and_a_periodic_full_scan_still_frees_old_cycles():
    now = [0.0]
    policy = FreezingGC(full_scan_seconds=600, clock=lambda: now[0])
    gc.collect()
    policy.install()
    try:
        kept = [Node() for _ in range(1000)]
        gc.collect()  # a full collection: what survived it is frozen
        assert gc.get_freeze_count() >= len(kept) and policy.frozen_after >= 1
        young = cycle()
        gc.collect()  # a cycle that became garbage before it was ever frozen is freed as usual
        assert young() is None
        live_cycle = [cycle()]
        a = live_cycle[0]()
        gc.collect()  # a live cycle survives and is frozen with the rest
        del a
        gc.collect()  # within the period: frozen garbage is not scanned
        assert live_cycle[0]() is not None and policy.full_scans == 0
        now[0] = 601.0
        gc.collect()  # the period is over: this collection unfreezes first and frees the old cycle
        assert live_cycle[0]() is None and policy.full_scans == 1
        assert gc.get_freeze_count() > 0  # and freezes the survivors again
        del kept
    finally:
        policy.uninstall()
    assert gc.get_freeze_count() == 0
