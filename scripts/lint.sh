#!/usr/bin/env bash
# Static checks run by `make lint` (and `make test`): ruff on every Python file, mypy on the
# `cem` package. mypy cannot read the pyproject package mapping (cem.streams -> streams/, ...),
# so it reads a tree of links that mirrors it, rebuilt here on every run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
cd "$ROOT"
TREE=".cache/typecheck/cem"
rm -rf "$TREE"; mkdir -p "$TREE"
for entry in cem/*; do ln -s "$ROOT/$entry" "$TREE/"; done
for room in streams schemas sinks connectors kafka; do ln -s "$ROOT/$room" "$TREE/$room"; done
"$BIN/ruff" check --quiet .
"$BIN/mypy"
