"""Entry point of `cem worker`: the Faust worker with every agent."""
from __future__ import annotations

from cem import metrics
from cem.kafka.connection import KafkaConnection
from cem.settings import Settings
from .app import create_app


def run_worker(settings: Settings) -> None:
    from faust.worker import Worker

    # Faust opens its data folder without creating it: a fresh CEM_DATA_DIR must not stop the worker
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics.serve(settings.worker_metrics_port, settings.metrics_host)
    metrics.watch_gc()
    if settings.worker_gc_full_scan_seconds > 0:
        from .gc_policy import FreezingGC
        FreezingGC(settings.worker_gc_full_scan_seconds).install()
    if settings.worker_heap_trim_seconds > 0:
        from .heap_trim import HeapTrimmer
        HeapTrimmer(settings.worker_heap_trim_seconds, metrics.heap_trimmed).start()
    app = create_app(settings, KafkaConnection.from_settings(settings))
    Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
