"""`cem chaos` never waits without an end: each wait stops at its own limit or at the run's
deadline, whichever comes first, and says what it waited on and what it saw (CI once killed a
quick run that waited 600 s for a pipeline that did not catch up, with no word on why)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cem.ops.chaos import Deadline, GaveUp, Roles, progressed, wait_for
from cem.settings import Settings


def test_a_wait_that_succeeds_returns_its_seconds():
    calls = iter([False, False, True])
    took = wait_for("x", lambda: next(calls), 5.0, Deadline(60), lambda: "", interval=0.01)
    assert 0 <= took < 1


def test_a_wait_gives_up_at_its_own_limit_naming_what_and_what_it_saw():
    began = time.monotonic()
    with pytest.raises(GaveUp) as err:
        wait_for("the worker group to make progress after worker_kill", lambda: False, 0.3, Deadline(60),
                 lambda: "Uncommitted records: worker (g): behind by 12 on cem.raw.web.", interval=0.05)
    assert time.monotonic() - began < 2
    said = str(err.value)
    assert "the worker group to make progress after worker_kill" in said
    assert "its limit of" in said and "behind by 12 on cem.raw.web" in said


def test_the_runs_deadline_ends_a_wait_before_its_own_limit():
    deadline = Deadline(0.3)
    began = time.monotonic()
    with pytest.raises(GaveUp, match=r"the run's deadline of 0 s \(--deadline\)"):
        wait_for("the pipeline to catch up", lambda: False, 600.0, deadline, lambda: "", interval=0.05)
    assert time.monotonic() - began < 2
    # once it has passed, a wait checks its condition once and gives up at once
    assert wait_for("done already", lambda: True, 600.0, deadline, lambda: "") == 0
    with pytest.raises(GaveUp):
        wait_for("never", lambda: False, 600.0, deadline, lambda: "")


def test_progress_is_new_commits_after_the_first_answer_even_when_the_broker_was_away():
    answers = iter([-1, -1, 100, 100, 130])  # broker away at first: its first real answer is the base
    moved = progressed(lambda: next(answers))
    assert [moved(), moved(), moved(), moved()] == [False, False, False, True]


def test_stopping_every_role_is_bounded_even_when_one_ignores_sigterm(tmp_path):
    roles = Roles(Settings(data_dir=tmp_path), tmp_path)
    roles.runs.update(["stubborn", "polite"])
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    roles.procs["stubborn"] = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                                               stdout=subprocess.PIPE)
    roles.procs["stubborn"].stdout.readline()  # type: ignore[union-attr]
    roles.procs["polite"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                             start_new_session=True)
    assert "stubborn running" in roles.describe()
    began = time.monotonic()
    roles.stop_all(timeout=1.0)
    assert time.monotonic() - began < 5
    assert roles.procs == {}
