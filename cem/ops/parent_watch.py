"""A role started by a launcher (`cem demo`, `cem bench`, `cem chaos`, `cem worker --processes`,
the tests) stops when that launcher is gone, however it went.

Roles run in their own session (Ctrl-C reaches only the launcher, which stops them in order), so
a launcher killed with SIGKILL — a timeout, an OOM kill, `kill -9` — used to leave its worker,
sink and collector running against the broker. Such a worker stays in its consumer group: after
the topics are recreated it reads them again from the beginning (Faust's `earliest`), feeding
another run's raw events through the identity coordinator a second time — after an erasure,
that links the erased customer's old identifiers again.

`--stop-with-parent PID` (hidden, set by `start_role`) starts a daemon thread that checks once a
second whether this process's parent is still PID; when it is not (reparented to init or a
subreaper), it sends itself SIGTERM — the role's ordinary graceful stop — and SIGKILL if that
has not ended the process within `grace` seconds (a stop stuck on an unreachable ClickHouse).
A PID that is not the parent at start means the launcher is already gone: stop at once.
(`prctl(PR_SET_PDEATHSIG)` would be Linux-only and fires when the *thread* that started the
child ends, not the launcher.)"""
from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)


def stop_with_parent(pid: int, every: float = 1.0, grace: float = 60.0) -> threading.Thread:
    """Watch parent `pid` from a daemon thread (see the module docstring); returns the thread."""

    def watch() -> None:
        halt = threading.Event()
        while os.getppid() == pid:
            halt.wait(every)
        log.warning("launcher (pid %d) is gone: stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)
        halt.wait(grace)
        os.kill(os.getpid(), signal.SIGKILL)

    t = threading.Thread(target=watch, name="cem-parent-watch", daemon=True)
    t.start()
    return t
