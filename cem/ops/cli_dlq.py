"""`cem dlq list|show|replay`: inspect dead letters and re-publish the ones a fix made
acceptable. Selection, summary and the replay plan are cem.dead_letters (pure); reading and
producing is cem.kafka.dlq_replay."""
from __future__ import annotations

import time
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from cem.dead_letters import (
    DeadLetter,
    Replay,
    Selection,
    Skip,
    format_ms,
    parse_since,
    plan_replay,
    preview,
    select,
    show_key,
    summarize,
)
from cem.kafka.connection import KafkaConnection
from cem.kafka.dlq_replay import derive_key, read_dead_letters, read_ledger, replay, topic_partitions
from cem.ops.console import console
from cem.settings import Settings

app = typer.Typer(no_args_is_help=True, help="The dead-letter topic cem.dlq: inspect and replay.")

REASON = typer.Option(None, "--reason", help="A reason code (`unknown_schema_id`), or a family "
                      "(`missing_field` matches `missing_field:<name>`).")
SINCE = typer.Option(None, "--since", help="Failed at or after: a duration back (30m, 2h, 7d) "
                     "or an ISO date/time (2026-12-04T10:00Z).")
STAGE = typer.Option(None, "--stage", help="Only this stage: ingest, identity, landing, collector, import, notify.")


def _selected(reason: Optional[str], since: Optional[str],
              stage: Optional[str]) -> tuple[Settings, list[DeadLetter]]:
    from cem.ops.cli import _settings  # here, not at the top: cem.ops.cli imports this module to register the group
    settings = _settings(kafka=True)  # reads cem.dlq: a missing broker is one line
    try:
        since_ms = parse_since(since, int(time.time() * 1000)) if since else None
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    try:
        letters = select(read_dead_letters(KafkaConnection.from_settings(settings)), Selection(reason, since_ms, stage))
    except (RuntimeError, TimeoutError) as err:  # no cem.dlq, or the broker does not answer
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(1) from None
    return settings, letters


@app.command("list")
def dlq_list(reason: Optional[str] = REASON, since: Optional[str] = SINCE, stage: Optional[str] = STAGE) -> None:
    """Dead letters counted by reason, and by reason, stage and source topic."""
    _, letters = _selected(reason, since, stage)
    s = summarize(letters)
    if not s.total:
        console.print("no dead letters match")
        return
    t = Table(title=f"cem.dlq: {s.total} dead letter(s), failed {format_ms(s.oldest)} .. {format_ms(s.newest)}")
    for col in ("reason", "stage", "source topic", "count"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for r, st, topic, n in s.by_origin:
        t.add_row(r, st, topic, str(n))
    console.print(t)
    console.print("by reason: " + ", ".join(f"{r} {n}" for r, n in s.by_reason), highlight=False)
    if s.replays_failed_again:
        console.print(f"{s.replays_failed_again} of them are replayed records that failed again (cem-replay-of)")


@app.command("show")
def dlq_show(reason: Optional[str] = REASON, since: Optional[str] = SINCE, stage: Optional[str] = STAGE,
             limit: int = typer.Option(20, "--limit", min=1,
                                       help="Show at most this many (the oldest first).")) -> None:
    """The dead letters themselves: reason, detail, source, key and a safe preview of the value."""
    _, letters = _selected(reason, since, stage)
    letters.sort(key=lambda d: (d.failed_at or 0, d.dlq_partition, d.dlq_offset))
    for d in letters[:limit]:
        console.print(f"[bold]cem.dlq {d.id}[/bold]  {format_ms(d.failed_at)}  {escape(d.reason)}  "
                      f"stage {escape(d.stage)}", highlight=False)
        key = show_key(d.source_key) if d.key_known else "not recorded"
        console.print(f"  source  {escape(d.source)}  key {escape(key)}"
                      + (f"  replay of {escape(d.replay_of)}" if d.replay_of else ""), highlight=False)
        console.print(f"  detail  {escape(d.detail)}", highlight=False)
        console.print(f"  value   {escape(preview(d.value))}", highlight=False)
    more = len(letters) - limit
    console.print(f"{min(limit, len(letters))} of {len(letters)} shown"
                  + (f"; {more} more (--limit)" if more > 0 else ""))


@app.command("replay")
def dlq_replay(reason: Optional[str] = REASON, since: Optional[str] = SINCE, stage: Optional[str] = STAGE,
               dry_run: bool = typer.Option(False, "--dry-run",
                                            help="Say what would be re-published; send nothing.")) -> None:
    """Re-publish matching dead letters to their source topic with their original key, once each.

    The pipeline judges them again: what still fails comes back to cem.dlq with its reason."""
    settings, letters = _selected(reason, since, stage)
    b = KafkaConnection.from_settings(settings)
    plan = plan_replay(letters, read_ledger(b), topic_partitions(b), derive_key)
    todo = [p for p in plan if isinstance(p, Replay)]
    skipped = [p for p in plan if isinstance(p, Skip)]
    for s in skipped:
        console.print(f"skip  cem.dlq {s.letter.id} ({escape(s.letter.reason)}, {escape(s.letter.source)}): "
                      f"{escape(s.why)}", highlight=False)
    for r in todo:
        where = f"{r.topic}:{r.partition}" if r.partition is not None else f"{r.topic} (by key)"
        key = {"header": "original key", "none": "no key, like the original",
               "derived": "key derived from the event (the original's was not recorded)",
               "unknown": "without a key (the original's was not recorded)"}[r.key_from]
        console.print(f"{'would replay' if dry_run else 'replay'}  cem.dlq {r.letter.id} ({escape(r.letter.reason)}) "
                      f"-> {escape(where)}, {key}", highlight=False)
    if dry_run or not todo:
        console.print(f"{len(todo)} to replay, {len(skipped)} skipped"
                      + (" (dry run: nothing sent)" if dry_run else ""))
        return
    try:
        result = replay(b, todo, settings.topic_partitions)
    except (TimeoutError, RuntimeError) as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(1) from None
    for item, why in result.failed:
        console.print(f"[red]not sent[/red] cem.dlq {item.letter.id}: {escape(why)} (not in the ledger: "
                      "the next replay tries it again)")
    console.print(f"{len(result.sent)} replayed, {len(result.failed)} failed, {len(skipped)} skipped; "
                  "the worker judges them again — `cem dlq list --since 10m` shows what failed again")
    if result.failed:
        raise typer.Exit(1)
