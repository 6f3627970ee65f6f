"""The terminal every `cem` command prints to: Rich consoles as wide as the terminal, or 160
columns when writing to a pipe or file (Rich's default of 80 there cuts rule names and dead
letter reasons in tables), unless COLUMNS says otherwise."""
from __future__ import annotations

import os
import sys

from rich.console import Console


def _width() -> int | None:
    return None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160


console = Console(width=_width())
err_console = Console(stderr=True, width=_width())
