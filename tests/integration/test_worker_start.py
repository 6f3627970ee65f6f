"""`cem worker` on a fresh machine: CEM_DATA_DIR's folders need not exist yet."""
from __future__ import annotations

import pytest

from cem.ops.procs import start_role
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
