"""Graceful stop of a long-running role (worker loops, `cem sink`, `cem notify`): SIGTERM and
SIGINT set a flag the role's loop checks between batches, so the batch in hand is finished,
acknowledged and committed before the process exits. Shared by every role like settings and
metrics; not domain code (it installs signal handlers)."""
from __future__ import annotations

import signal
from typing import Callable


def stop_requested() -> Callable[[], bool]:
    """Install SIGTERM/SIGINT handlers; the returned callable says whether one arrived (a role's
    loop checks it between batches and finishes the batch in hand before it exits)."""
    flag = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        flag["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return lambda: flag["now"]
