"""The worker's heap trimmer gives freed heap back to the operating system (glibc only)."""
import gc

import pytest

from cem.streams.heap_trim import HeapTrimmer, malloc_trim, rss_bytes

pytestmark = pytest.mark.skipif(malloc_trim() is None or rss_bytes() == 0,
                                reason="needs glibc's malloc_trim and /proc")


def test_freed_holes_stay_resident_until_a_trim_hands_them_back():
    calls = []
    trimmer = HeapTrimmer(60, on_trim=lambda released, took: calls.append((released, took)))
    # ~120 MB of blocks too big for pymalloc (so glibc malloc), one in 50 kept alive: freeing the
    # rest leaves holes inside the heap, which glibc keeps for reuse instead of returning
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(60_000)]
    kept = blocks[::50]
    held = rss_bytes()
    del blocks
    gc.collect()
    freed_but_resident = rss_bytes()
    released = trimmer.trim_once()
    after = rss_bytes()

    assert freed_but_resident > held - 30 * 2**20, "glibc returned the holes by itself: nothing to measure"
    assert released > 60 * 2**20
    assert after <= freed_but_resident - 60 * 2**20
    assert calls and calls[0][0] == released and calls[0][1] >= 0
    assert trimmer.trims == 1 and trimmer.released == released
    del kept


def test_the_thread_trims_every_period_until_stopped():
    trimmer = HeapTrimmer(0.01)
    trimmer.start()
    try:
        for _ in range(500):
            if trimmer.trims >= 3:
                break
            trimmer.stop.wait(0.01)
    finally:
        trimmer.stop.set()
        trimmer.join(5)
    assert trimmer.trims >= 3
    assert not trimmer.is_alive()
