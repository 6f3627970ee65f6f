"""Issue 10 for operators: the metrics cem exports, checked from the outside.

- A real Prometheus server (Debian's `prometheus`) scrapes a running worker and collector; what
  it reads back through its HTTP API matches what the test sent.
- The Prometheus config and alert rules pass `promtool check`; every PromQL expression of the
  Grafana dashboard parses (promtool, as recording rules); every metric the dashboard and the
  rules use is one cem exports; the README's metric table lists exactly the exported metrics.
- docker/compose.yaml parses; its services, CEM_* variables, ports and mounted files agree with
  the settings and with the Prometheus scrape targets.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from cem.settings import Settings
from tests.support.pipeline import free_port, start, stop_role, wait_until

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    not (PROMTOOL and PROMETHEUS) and not os.environ.get("CI"),
    reason="Debian's prometheus package is not installed (make install installs it; CI fails without it)")
METRIC = re.compile(r"\bcem_[a-z_]+\b")


def exported_metrics() -> set[str]:
    """Every sample name cem's processes can export (worker, sink, notify, collector)."""
    import importlib
    import prometheus_client
    for module in ("cem.metrics", "cem.connectors.collector"):  # importing registers their metrics
        importlib.import_module(module)
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        if not family.name.startswith("cem_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def dashboard_exprs() -> list[str]:
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "cem.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not PROMTOOL:
        pytest.fail("promtool is missing: install Debian's prometheus package (make install does)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True)


@needs_prometheus
def test_prometheus_config_alert_rules_and_dashboard_parse(tmp_path):
    rules = DOCKER / "prometheus" / "alerts.yml"
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(rules)]  # the container path, mapped to the repository's file
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # every dashboard expression parses: promtool checks them as recording rules
    recording = {"groups": [{"name": "dashboard", "rules": [{"record": f"cem:panel{i}", "expr": e}
                                                           for i, e in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(recording))
    checked = promtool("check", "rules", str(tmp_path / "dashboard_rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_rules_and_docs_use_only_exported_metrics():
    exported = exported_metrics()
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    used = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    used |= {m for g in rules["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
    assert used and not used - exported, f"not exported by cem: {sorted(used - exported)}"
    # the README's metric table lists every exported metric, and nothing else
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| metric |"):]
    table = table[:table.index("\n\n")]
    documented = set(re.findall(r"`(cem_[a-z_]+)", table))
    assert documented == {base(m) for m in exported}, (documented ^ {base(m) for m in exported})


def test_compose_stack_agrees_with_settings_and_scrape_config():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "clickhouse", "worker", "sink", "collector", "notify",
            "prometheus", "grafana"} <= set(services)
    fields = {f"CEM_{name.upper()}" for name in Settings.model_fields}
    ports: dict[str, str] = {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        unknown = {k for k in env if k.startswith("CEM_")} - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not cem settings"
        published = [str(p).split(":")[-1] for p in svc.get("expose", []) + svc.get("ports", [])]
        for key in ("CEM_WORKER_METRICS_PORT", "CEM_SINK_METRICS_PORT", "CEM_NOTIFY_METRICS_PORT",
                    "CEM_COLLECTOR_PORT"):
            if key in env:
                ports[name] = str(env[key])
                assert str(env[key]) in published, name
        if env.get("CEM_KAFKA_BOOTSTRAP"):
            assert {h.split(":")[0] for h in env["CEM_KAFKA_BOOTSTRAP"].split(",")} <= set(services)
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name} mounts {src}, which is not in docker/"
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
    # every cem role with a metrics port is scraped on that port, and nothing else is
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = set()
    for job in scrape["scrape_configs"]:
        for sc in job.get("static_configs", []):
            targets |= set(sc["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{n}:{sd['port']}" for n in sd["names"]}
    assert targets == {f"{svc}:{port}" for svc, port in ports.items()}
    assert set(services["worker"]["environment"]["CEM_METRICS_HOST"].split()) == {"0.0.0.0"}



def prom_value(port: int, query: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.loads(r.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@needs_prometheus
def test_real_prometheus_scrapes_worker_and_collector(cem_settings, tmp_path):
    wport, cport, pport = free_port(), free_port(), free_port()
    key = "obs-key"
    s = cem_settings.model_copy(update={"worker_metrics_port": wport, "collector_port": cport,
                                        "collector_api_keys": {"web-shop": SecretStr(key)}})
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{wport}"]}]},
                                 {"job_name": "collector", "static_configs": [{"targets": [f"127.0.0.1:{cport}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    worker, collector = start("worker", s, "worker"), start("collector", s, "collector")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        now = int(time.time() * 1000)
        browse = [{"event_id": f"obs-{i}", "event_type": "page_view", "occurred_at": now - 60_000 + i,
                   "identifiers": {"anonymous_id": f"visitor-{i % 7}"}, "attributes": {"url": "/lamps"}}
                  for i in range(40)]
        rage = [{"event_id": f"obs-rage-{i}", "event_type": "click", "occurred_at": now - 5_000 + 100 * i,
                 "identifiers": {"anonymous_id": "visitor-rage"}, "attributes": {"element": "#pay"}}
                for i in range(4)]  # 4 clicks on one element within 1 s: one rage_click moment
        sent = browse + rage

        def post() -> bool:
            req = urllib.request.Request(f"http://127.0.0.1:{cport}/v1/events", method="POST",
                                         data=json.dumps({"batch": sent}).encode(),
                                         headers={"Content-Type": "application/json", "X-API-Key": key})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status == 202
            except OSError:
                return False  # collector still starting

        wait_until(post, 60, 1.0, "the collector to accept the batch", (collector,))

        def seen(query: str, want: float) -> bool:
            try:
                return prom_value(pport, query) == want
            except OSError:
                return False  # Prometheus still starting

        wait_until(lambda: seen('sum(cem_collector_events_total{outcome="accepted"})', len(sent)), 120, 1.0,
                   "Prometheus to read the collector's accepted events", (collector, prom))
        wait_until(lambda: seen('sum(cem_events_total{job="worker", topic="cem.raw.web", direction="in"})', len(sent)),
                   180, 1.0, "Prometheus to read the worker's events in", (worker, prom))
        wait_until(lambda: seen('sum(cem_moments_total{job="worker", rule="rage_click"})', 1), 180, 1.0,
                   "Prometheus to read the rage_click moment", (worker, prom))
        assert prom_value(pport, 'sum(cem_alert_latency_seconds_count{job="worker"})') == 1
        p99 = prom_value(pport,
                         'histogram_quantile(0.99, sum by (le) (cem_alert_latency_seconds_bucket{job="worker"}))')
        assert p99 is not None and 0 < p99 <= 30
        out = prom_value(pport, 'sum(cem_events_total{job="collector", topic="cem.raw.web", direction="out"})')
        assert out == len(sent)
    finally:
        prom.terminate()
        prom.wait(30)
        stop_role(collector), stop_role(worker)
