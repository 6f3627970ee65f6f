"""`cem worker --processes N`: N worker processes in one consumer group, supervised.

Each child is a plain `cem worker` (same settings, same group): Kafka spreads the raw, stage and
identity partitions over them, the identity coordinator lands on whichever holds
cem.identity.links partition 0 (one writer). A child gets its own Prometheus port
(CEM_WORKER_METRICS_PORT + its index, when metrics are on); scratch SQLite files are anonymous
per process already. A child that exits on its own (a crash, exit 70) is started again after a
second — its partitions moved to the others meanwhile and move back; SIGTERM/SIGINT stop every
child (each finishes its batch in hand) and then this process. Children stop by themselves when
this process is gone, even killed with SIGKILL (cem.ops.parent_watch).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cem.ops.procs import settings_env
from cem.settings import Settings


def run_workers(settings: Settings, n: int, log: object = print) -> int:
    def spawn(i: int) -> subprocess.Popen:
        env = {"CEM_WORKER_METRICS_PORT": str(settings.worker_metrics_port + i)} if settings.worker_metrics_port else {}
        return subprocess.Popen([sys.executable, "-m", "cem", "--stop-with-parent", str(os.getpid()), "worker"],
                                env=settings_env(settings, **env))

    stopping = {"now": False}

    def stop(signum: int, frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [spawn(i) for i in range(n)]
    log(f"started {n} worker processes: pids {', '.join(str(c.pid) for c in children)}")  # type: ignore[operator]
    while not stopping["now"]:
        time.sleep(0.5)
        for i, c in enumerate(children):
            if c.poll() is not None and not stopping["now"]:
                log(f"worker process {i} (pid {c.pid}) exited with {c.returncode}; starting it again")  # type: ignore[operator]
                time.sleep(1.0)
                children[i] = spawn(i)
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    for c in children:
        try:
            c.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    return 0
