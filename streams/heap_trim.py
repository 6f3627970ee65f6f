"""Returning freed heap to the operating system (issue 9: a worker's memory flat over a long run).

glibc's malloc keeps memory a process has freed for reuse instead of giving it back: only a free
stretch at the very top of the heap is returned on its own, and its mmap threshold rises after
big blocks are freed, so later Avro blocks and encoded timelines (hundreds of KiB) come from the
heap too. A worker's busy hours leave free holes inside the heap that stay resident — RSS then
follows the highest load so far, not the data held. `malloc_trim(0)` hands every free page of
every arena back (madvise), as Dask's workers do for their "unmanaged memory".

Contract: `HeapTrimmer` is a daemon thread that calls `malloc_trim(0)` every `every` seconds and
counts what RSS dropped by. ctypes releases the GIL for the call, so agents keep running; malloc
in other threads waits for an arena's lock for the duration of one trim (milliseconds). Where
glibc's `malloc_trim` does not exist (musl, macOS) it logs that once and does nothing.
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None where there is none."""
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def rss_bytes() -> int:
    """Resident set size of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class HeapTrimmer(threading.Thread):
    def __init__(self, every: float, on_trim: Callable[[int, float], None] = lambda released, took: None):
        super().__init__(name="cem-heap-trim", daemon=True)
        self._every = every
        self._on_trim = on_trim
        self._trim = malloc_trim()
        self.stop = threading.Event()
        self.trims = 0
        self.released = 0  # bytes RSS dropped by over every trim (a trim never adds any)

    def trim_once(self) -> int:
        """One trim now; returns the bytes RSS dropped by (0 if nothing, or no malloc_trim)."""
        if self._trim is None:
            return 0
        before = rss_bytes()
        started = time.perf_counter()
        self._trim(0)
        took = time.perf_counter() - started
        released = max(0, before - rss_bytes())
        self.trims += 1
        self.released += released
        self._on_trim(released, took)
        return released

    def run(self) -> None:
        if self._trim is None:
            log.info("no glibc malloc_trim here: freed heap stays with the process (CEM_WORKER_HEAP_TRIM_SECONDS)")
            return
        while not self.stop.wait(self._every):
            self.trim_once()
