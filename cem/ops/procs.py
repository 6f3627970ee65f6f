"""Start and stop cem roles as child processes (demo, bench, tests): each role is its own
process, exactly as in production; embedded ClickHouse is owned by the sink process alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pydantic import SecretStr

from cem.kafka.admin import group_lag
from cem.kafka.connection import KafkaConnection
from cem.settings import ERASURES_TOPIC, IDENTITY_LINKS_TOPIC, RAW_TOPICS, Settings, stage_topic
from cem.sinks.run import TABLES


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a child role: every setting exactly as `settings` has it (so a test's or
    the bench's overrides reach the worker too), then `overrides`; other CEM_* variables dropped."""

    def text(v: object) -> str:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return json.dumps({k: text(x) for k, x in v.items()})
        if isinstance(v, list):
            return json.dumps(v)
        return str(v)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CEM_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[f"CEM_{name.upper()}"] = text(value)
    env["CEM_CLICKHOUSE_DSN"] = settings.clickhouse
    env["CEM_DATA_DIR"] = str(settings.data_dir)
    env.update(overrides)
    return env


def start_role(role: str, settings: Settings, log_path: Path, *args: str, **env: str) -> subprocess.Popen:
    """`cem <role> <args>` in a child process, output to `log_path`. The child runs in its own
    session (Ctrl-C reaches only this process, which stops its roles in order) and stops by
    itself when this process is gone, even killed with SIGKILL (cem.ops.parent_watch): a worker
    left behind would read the next run's topics again."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "cem", "--stop-with-parent", str(os.getpid()), role, *args],
                            stdout=out, stderr=subprocess.STDOUT, env=settings_env(settings, **env),
                            start_new_session=True)


def stop_role(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5,
               what: str = "condition", procs: tuple[subprocess.Popen, ...] = ()) -> None:
    """Poll `predicate` until true; raise TimeoutError naming `what`, or RuntimeError if one of
    `procs` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                cmd = [str(a) for a in p.args] if isinstance(p.args, (list, tuple)) else [str(p.args)]
                if "--stop-with-parent" in cmd:  # "cem worker", as an operator would type it
                    del cmd[cmd.index("--stop-with-parent"):cmd.index("--stop-with-parent") + 2]
                raise RuntimeError(f"{' '.join(cmd[-2:])} exited with {p.returncode} "
                                   f"while waiting for {what}; see its log")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def pipeline_lag(settings: Settings, worker_group: str | None = None) -> int:
    """Records not yet committed anywhere in the pipeline: the worker group on the raw topics,
    the identity links and the customer stage's input; the landing group on every topic it lands
    and on the erasures it applies."""
    b = KafkaConnection.from_settings(settings)
    # the customer stage reads cem.stage, or cem.touchpoints itself with CEM_STAGE_HOP=avro
    lag = group_lag(b, worker_group or settings.app_id,
                    [*RAW_TOPICS.values(), IDENTITY_LINKS_TOPIC, stage_topic(settings)])
    if lag:
        return lag
    return group_lag(b, f"{settings.app_id}-landing", [*TABLES, ERASURES_TOPIC])
