"""`cem worker` on a fresh machine: CEM_DATA_DIR's folders need not exist yet. A role started by
a launcher (cem demo, bench, chaos, the tests) stops when the launcher is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cem.ops.procs import settings_env, start_role
from tests.support.pipeline import stop_role, wait_until

pytestmark = pytest.mark.integration


def test_the_worker_creates_a_missing_data_dir_and_starts(cem_settings, tmp_path):
    s = cem_settings.model_copy(update={"data_dir": tmp_path / "fresh" / "nested"})
    log = tmp_path / "worker.log"  # outside the data dir: nothing creates it before the worker
    worker = start_role("worker", s, log)
    try:
        wait_until(lambda: "[^Worker]: Ready" in log.read_text(), 90, what="the worker to be ready", procs=(worker,))
    finally:
        stop_role(worker)
    assert (s.data_dir / "faust").is_dir()
    assert "FileNotFoundError" not in log.read_text()


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _launch(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """A launcher process running `code`, which prints the pid of the child it started."""
    launcher = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    return launcher, int(launcher.stdout.readline())


def test_a_worker_stops_by_itself_when_its_launcher_is_killed(cem_settings, tmp_path):
    # a launcher killed with SIGKILL (a test's timeout killing `cem chaos`) left its worker running in
    # its own session; after the next run recreated the topics it read them again from the start
    log = tmp_path / "worker.log"
    launcher, pid = _launch("import sys, time; from pathlib import Path; from cem.settings import Settings; "
                            "from cem.ops.procs import start_role; "
                            "print(start_role('worker', Settings(), Path(sys.argv[1])).pid, flush=True); "
                            "time.sleep(600)", str(log), env=settings_env(cem_settings))
    try:
        wait_until(lambda: "[^Worker]: Ready" in log.read_text(), 90, what="the worker to be ready")
        assert _alive(pid)
        launcher.kill()
        launcher.wait()
        wait_until(lambda: not _alive(pid), 90, what="the worker to stop after its launcher was killed")
    finally:
        launcher.kill()
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert f"launcher (pid {launcher.pid}) is gone: stopping" in text
    assert "Signal received: 15" in text  # its ordinary graceful stop (it leaves its group)


def test_a_role_that_does_not_stop_on_sigterm_is_killed_after_the_grace(tmp_path):
    # the child ignores SIGTERM (a stop stuck on something): SIGKILL follows after `grace`
    launcher, pid = _launch(
        "import os, subprocess, sys, time; print(subprocess.Popen([sys.executable, '-c', "
        "'import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "from cem.ops.parent_watch import stop_with_parent; stop_with_parent(int(sys.argv[1]), every=0.1, grace=1.0); "
        "time.sleep(120)', str(os.getpid())], start_new_session=True).pid, flush=True); time.sleep(120)")
    try:
        assert _alive(pid)
        launcher.kill()
        launcher.wait()
        wait_until(lambda: not _alive(pid), 30, interval=0.1, what="the child to be killed after the grace")
    finally:
        launcher.kill()
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
