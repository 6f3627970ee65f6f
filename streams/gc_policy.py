"""Garbage-collection policy of the worker (issue 9: event→alert tail latency).

A worker holds every active customer's state as Python objects (hundreds of MB). CPython's full
(generation-2) collections scan all of it and, measured in `cem bench`, took 200–420 ms each
within 2½ minutes at 2,000 events/s while finding nothing to free: pauses that stall every
agent and put the event→alert p99 in seconds. The policy, as services with large long-lived
heaps do (CPython's `gc.freeze` was added for this):

- after each full collection, everything still alive is moved to the permanent generation
  (`gc.freeze()`), so later collections scan only what was allocated since;
- every `full_scan_seconds` one full collection first unfreezes everything, so reference cycles
  among old state are still found: at most one long pause per period, and nothing leaks for
  longer than a period (acyclic garbage is freed by reference counting at once, frozen or not).
"""
from __future__ import annotations

import gc
import time


class FreezingGC:
    def __init__(self, full_scan_seconds: float = 600.0, clock=time.monotonic):
        self._period = full_scan_seconds
        self._clock = clock
        self._last_full = clock()
        self.frozen_after = 0     # full collections followed by a freeze
        self.full_scans = 0       # full collections over everything (unfrozen first)

    def install(self) -> None:
        gc.callbacks.append(self.callback)

    def uninstall(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)
        gc.unfreeze()

    def callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            if self._clock() - self._last_full >= self._period:
                gc.unfreeze()  # this collection scans old state too
                self._last_full = self._clock()
                self.full_scans += 1
        else:
            gc.freeze()
            self.frozen_after += 1
