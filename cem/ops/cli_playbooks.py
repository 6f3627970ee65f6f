"""`cem playbooks list|validate`: the recovery playbooks (cem/playbooks.py), shown and checked."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cem.ops.console import console

app = typer.Typer(no_args_is_help=True, help="Recovery playbooks: the action recommended on every alert.")


def _load(file: Optional[Path], rules: Optional[Path]):
    from cem.events import CHANNELS
    from cem.playbooks import PlaybookError, load_playbooks
    from cem.rules import RuleError, load_rules
    try:
        names = frozenset(r.name for r in load_rules(rules))
        return load_playbooks(file, names, CHANNELS)
    except (PlaybookError, RuleError) as err:
        console.print(f"[red]invalid:[/red] {err}")
        raise typer.Exit(1) from None


def _names(values: frozenset[str] | None) -> str:
    return "*" if values is None else ", ".join(sorted(values))


@app.command("list")
def playbooks_list(file: Optional[Path] = typer.Argument(None, help="Playbooks TOML (default: CEM_PLAYBOOKS_FILE "
                                                         "or the shipped one)."),
                   rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML the playbooks refer to "
                                                        "(default: CEM_RULES_FILE or the shipped catalogue).")) -> None:
    """Show every playbook in the order they are tried, then the default, bands and escalation."""
    import os
    file = file or (Path(os.environ["CEM_PLAYBOOKS_FILE"]) if os.environ.get("CEM_PLAYBOOKS_FILE") else None)
    rules = rules or (Path(os.environ["CEM_RULES_FILE"]) if os.environ.get("CEM_RULES_FILE") else None)
    books = _load(file, rules)
    t = Table(title=f"playbooks in {file or 'the shipped file'} (first match wins)")
    for col in ("playbook", "rule", "channel", "value", "stage", "action", "within (h)", "escalates to"):
        t.add_column(col, no_wrap=col in ("playbook", "action"))
    for p in books.playbooks:
        a = p.action
        t.add_row(p.name, _names(p.rules), _names(p.channels), _names(p.values), _names(p.stages),
                  a.action + (f" {a.voucher_cents / 100:g}" if a.voucher_cents else ""),
                  f"{a.within_ms / 3_600_000:g}" if a.within_ms else "", a.escalate_to or books.escalation_team)
    d = books.default
    t.add_row("(default)", "*", "*", "*", "*", d.action, f"{d.within_ms / 3_600_000:g}" if d.within_ms else "",
              books.escalation_team)
    console.print(t)
    console.print("value bands (lifetime spend): " + ", ".join(f"{n} ≥ {f / 100:g}" for n, f in books.bands))
    console.print(f"unrecovered alerts escalate {books.escalation_steps} severity level(s), once")


@app.command("validate")
def playbooks_validate(file: Path = typer.Argument(..., exists=True, dir_okay=False),
                       rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML the playbooks refer "
                                                            "to (default: the shipped catalogue).")) -> None:
    """Validate a playbooks file; a broken one names the playbook and the key."""
    books = _load(file, rules)
    console.print(f"[green]ok[/green]: {len(books.playbooks)} playbooks, {len(books.bands)} value bands")
