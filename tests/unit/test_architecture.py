"""The rooms and their one-way arrows (docs/architecture.md), checked on every import in the
source tree — module level and inside functions — so a forbidden direction fails CI instead of
creeping in: the domain imports no infrastructure, connectors (ingress) and sinks (egress) never
import each other, the Kafka adapter imports no other adapter, and nothing but ops imports ops."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Folder -> the package name it is installed as (pyproject's package-dir).
ROOMS = {"cem": "cem", "streams": "cem.streams", "schemas": "cem.schemas", "sinks": "cem.sinks",
         "connectors": "cem.connectors", "kafka": "cem.kafka"}

INFRASTRUCTURE = ("faust", "mode", "confluent_kafka", "aiokafka", "clickhouse_connect", "chdb",
                  "avro", "fastavro", "prometheus_client", "aiohttp", "pydantic", "pydantic_settings",
                  "typer", "rich")
ADAPTERS = ("cem.kafka", "cem.streams", "cem.sinks", "cem.connectors", "cem.schemas", "cem.ops")
DOMAIN_SHARED = ("cem.settings", "cem.metrics", "cem.shutdown")  # process edges, shared by every role

# (module prefix, forbidden import prefixes, why)
RULES = [
    ("cem.sim", INFRASTRUCTURE + ADAPTERS + DOMAIN_SHARED, "simulation tooling is pure like the domain"),
    ("cem.connectors", ("cem.sinks", "cem.streams", "cem.ops"), "connectors are ingress only"),
    ("cem.sinks", ("cem.connectors", "cem.streams", "cem.ops"), "sinks are egress only"),
    ("cem.kafka", ("cem.connectors", "cem.sinks", "cem.streams", "cem.ops", "clickhouse_connect", "chdb"),
     "the Kafka adapter imports no other adapter"),
    ("cem.streams", ("cem.connectors", "cem.sinks", "cem.ops", "clickhouse_connect", "chdb"),
     "workers never open ClickHouse; they publish to topics"),
    ("cem.schemas", ("cem.kafka", "cem.streams", "cem.sinks", "cem.connectors", "cem.ops"),
     "serde depends on the domain only"),
]
NOT_DOMAIN = {"cem.settings", "cem.metrics", "cem.shutdown", "cem.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ROOMS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _hits(imported: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in imported for f in forbidden if n == f or n.startswith(f + "."))


def _is_domain(module: str) -> bool:
    top = module.split(".")
    return top[0] == "cem" and (len(top) == 1 or top[1] not in {"ops", "sim", "streams", "schemas", "sinks",
                                                                   "connectors", "kafka"}) \
        and module not in NOT_DOMAIN


def test_the_tree_has_the_rooms() -> None:
    for package in ("cem.kafka.publisher", "cem.ops.cli", "cem.sim.simulator", "cem.timeline"):
        assert package in MODULES


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _is_domain(m)))
def test_domain_imports_no_infrastructure(module: str) -> None:
    bad = _hits(_imports(module, MODULES[module]), INFRASTRUCTURE + ADAPTERS + DOMAIN_SHARED)
    assert not bad, f"{module} is domain code and must stay pure, but imports {bad}"


@pytest.mark.parametrize("prefix, forbidden, why", RULES)
def test_adapter_rooms_point_one_way(prefix: str, forbidden: tuple[str, ...], why: str) -> None:
    bad = {m: _hits(_imports(m, p), forbidden) for m, p in MODULES.items() if m == prefix or m.startswith(prefix + ".")}
    bad = {m: hits for m, hits in bad.items() if hits}
    assert not bad, f"{why}: {bad}"


def test_nothing_but_ops_imports_ops() -> None:
    bad = {m: _hits(_imports(m, p), ("cem.ops",)) for m, p in MODULES.items()
           if not m.startswith("cem.ops") and m != "cem.__main__"}
    assert not {m: h for m, h in bad.items() if h}


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from cem.sinks.clickhouse.client import connect\n    from . import x\n")
    imported = _imports("cem.connectors.probe", source)
    assert "cem.sinks.clickhouse.client" in imported and "cem.connectors.x" in imported
