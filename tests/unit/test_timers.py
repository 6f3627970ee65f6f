"""Every timer store behaves like the model: each key's earliest armed deadline, fired once in
(deadline, key) order when the watermark passes it (pure; the scratch store uses a temp file)."""
from hypothesis import given, settings, strategies as st

from cem.streams.timers import BoundedTimers, HeapTimers, ScratchTimers

keys = st.sampled_from([f"c{i}" for i in range(6)])
ops = st.lists(st.one_of(
    st.tuples(st.just("arm"), st.integers(0, 1), keys, st.integers(0, 50)),
    st.tuples(st.just("due"), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("hold"), st.integers(0, 1), st.lists(st.tuples(st.integers(0, 50), keys), max_size=3)),
    st.tuples(st.just("drop"), st.integers(0, 1)),
), max_size=60)


class Model:
    def __init__(self) -> None:
        self.armed: dict[int, dict[str, int]] = {}

    def arm(self, p: int, key: str, deadline: int) -> None:
        a = self.armed.setdefault(p, {})
        a[key] = min(deadline, a.get(key, deadline))

    def due(self, p: int, wm: int) -> list[tuple[int, str]]:
        a = self.armed.get(p, {})
        out = sorted((d, k) for k, d in a.items() if d <= wm)
        for _, k in out:
            del a[k]
        return out

    def hold(self, p: int, items: list) -> None:
        for d, k in items:
            self.arm(p, k, d)

    def drop(self, p: int) -> None:
        self.armed.pop(p, None)

    def __len__(self) -> int:
        return sum(len(a) for a in self.armed.values())


@settings(max_examples=300, deadline=None)
@given(ops)
def test_heap_scratch_and_bounded_timers_match_the_model(sequence):
    model, heap, scratch = Model(), HeapTimers(), ScratchTimers(cache=2)  # a tiny cache: misses too
    bounded = BoundedTimers(limit=3)  # moves to the scratch file once a fourth key is armed
    for op in sequence:
        name, p, *args = op
        # a key lives in one partition (the customer's), as in the stage
        if name == "arm" and any(args[0] in a for q, a in model.armed.items() if q != p):
            continue
        if name == "hold" and any(k in a for _, k in args[0] for q, a in model.armed.items() if q != p):
            continue
        results = [getattr(t, name)(p, *args) for t in (model, heap, scratch, bounded)]
        assert results[1] == results[0] and results[2] == results[0] and results[3] == results[0], op
        assert len(heap) == len(model) == len(scratch) == len(bounded)


def test_a_deadline_moving_later_keeps_the_armed_one_and_an_earlier_one_replaces_it():
    for timers in (HeapTimers(), ScratchTimers(cache=1), BoundedTimers(limit=1)):
        timers.arm(0, "a", 100)
        timers.arm(0, "a", 200)   # later: the armed 100 stays
        timers.arm(0, "b", 150)
        timers.arm(0, "b", 120)   # earlier: replaces 150
        assert timers.due(0, 99) == []
        assert timers.due(0, 130) == [(100, "a"), (120, "b")]
        assert timers.due(0, 10_000) == []  # each fired once; the caller re-arms what it still needs
        assert len(timers) == 0


def test_bounded_timers_stay_in_memory_up_to_the_limit_then_move_every_deadline_to_the_scratch_file():
    timers = BoundedTimers(limit=3)
    for i, key in enumerate("abc"):
        timers.arm(i % 2, key, 10 * (i + 1))
    assert not timers.spilled
    timers.arm(1, "d", 5)
    assert timers.spilled and len(timers) == 4
    assert timers.due(0, 100) == [(10, "a"), (30, "c")]
    assert timers.due(1, 100) == [(5, "d"), (20, "b")]
