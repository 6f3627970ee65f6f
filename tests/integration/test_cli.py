"""The `cem` command as a newcomer meets it: one line and a non-zero exit code for a missing
broker or missing ClickHouse data (never a traceback), the demo's data as the fallback for every
reading command, whole rule names in tables, a clean --help. Runs `cem` in subprocesses, as a
shell does; no broker is started (a port where nothing listens stands for a missing one)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cem.rules import load_rules

CEM = [sys.executable, "-m", "cem"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEM_") and k != "COLUMNS"}
    return dict(env, CEM_DATA_DIR=str(data_dir), **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


ROLES = [["simulate", "--customers", "10", "--days", "1"], ["worker"], ["sink"], ["notify"], ["collector"],
         ["import", "web", "tests/fixtures/web_events.jsonl"], ["generate", "--count", "10"], ["topics", "create"],
         ["alerts", "ack", "a-1", "--by", "me"], ["identity", "unmerge", "m-1"],
         ["notify", "--retry-parked"], ["dlq", "list"], ["dlq", "replay", "--reason", "undecodable"]]


def test_every_role_without_a_broker_says_so_in_one_line_and_fails(tmp_path):
    bootstrap = f"127.0.0.1:{_free_port()}"  # nothing listens there
    env = _env(tmp_path / "data", CEM_KAFKA_BOOTSTRAP=bootstrap)
    root = Path(__file__).resolve().parents[2]
    procs = [(args, subprocess.Popen([*CEM, *args], env=env, cwd=root, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)) for args in ROLES]  # probes time out together
    for args, p in procs:
        out, err = p.communicate(timeout=60)
        line = _one_error_line(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        assert line == (f"no Kafka broker answers at {bootstrap}; start one with `cem infra up` "
                        "(or set CEM_KAFKA_BOOTSTRAP)"), (args, line)


def _run(args: list[str], data_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CEM, *args], env=_env(data_dir), cwd=cwd, capture_output=True, text=True, timeout=120)


def _truth(tmp_path: Path) -> Path:
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "truth_events.jsonl").write_text("")
    (truth / "truth_moments.jsonl").write_text("")
    return truth


READERS = [["report", "--truth", "truth"], ["backtest", "--since", "2026-01-01", "--until", "2026-02-01"],
           ["query", "recovery_impact"]]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_reading_command_without_any_data_says_what_to_set(tmp_path, args):
    _truth(tmp_path)
    line = _one_error_line(_run(args, tmp_path / "data", tmp_path))
    assert line.startswith(f"no ClickHouse data in {tmp_path / 'data' / 'clickhouse'} and no demo run in ")
    assert "CEM_CLICKHOUSE_DSN" in line and "make demo" in line
    assert not (tmp_path / "data" / "clickhouse").exists()  # failing does not create an empty database


@pytest.mark.parametrize("args", READERS[:2], ids=lambda a: a[0])
def test_a_reading_command_on_a_database_without_cem_tables_says_so(tmp_path, args):
    from cem.sinks.clickhouse.client import connect
    connect(f"chdb://{tmp_path / 'data' / 'clickhouse'}").close()  # exists, but nothing ever landed
    _truth(tmp_path)
    line = _one_error_line(_run(args, tmp_path / "data", tmp_path))
    assert line.endswith("has no cem tables yet: nothing has landed there (run `cem sink`, or point "
                         "CEM_CLICKHOUSE_DSN at the ClickHouse the sink writes)")


@pytest.mark.parametrize("args", READERS[:2], ids=lambda a: a[0])
def test_a_reading_command_falls_back_to_the_last_demo_run(tmp_path, args):
    from cem.sinks.clickhouse.client import connect
    from cem.sinks.clickhouse.migrations import apply
    demo = tmp_path / "data" / "demo" / "clickhouse"
    client = connect(f"chdb://{demo}")
    apply(client)
    client.close()
    _truth(tmp_path)
    proc = _run(args, tmp_path / "data", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"reading the last demo run in {demo}" in proc.stderr
    assert "payment_failed" in proc.stdout or "negative moments per rule" in proc.stdout
    assert not (tmp_path / "data" / "clickhouse").exists()


def test_rule_names_are_never_cut_in_tables_written_to_a_pipe(tmp_path):
    proc = _run(["rules", "list"], tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for rule in load_rules(None):
        assert f" {rule.name} " in proc.stdout, rule.name
    assert "…" not in proc.stdout


def test_help_shows_no_type_beside_flags_and_offers_version_and_completion(tmp_path):
    proc = _run(["--help"], tmp_path, tmp_path)
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert "--version" in proc.stdout and "--install-completion" in proc.stdout
    from importlib.metadata import version
    assert _run(["--version"], tmp_path, tmp_path).stdout.strip() == f"cem {version('cem')}"
    backtest_help = _run(["backtest", "--help"], tmp_path, tmp_path).stdout
    assert "--json" in backtest_help and "<bool>" not in backtest_help


def test_report_on_a_folder_without_ground_truth_says_so(tmp_path):
    from cem.sinks.clickhouse.client import connect
    from cem.sinks.clickhouse.migrations import apply
    client = connect(f"chdb://{tmp_path / 'data' / 'clickhouse'}")
    apply(client)
    client.close()
    (tmp_path / "empty").mkdir()
    line = _one_error_line(_run(["report", "--truth", "empty"], tmp_path / "data", tmp_path))
    assert line == f"empty is not a simulator run's folder: {Path('empty') / 'truth_events.jsonl'} is missing"
