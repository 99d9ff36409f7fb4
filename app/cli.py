"""``flask`` commands: ``flask --app wsgi metrics|tasks|db|store ...``.

The click groups are defined here once; commands for either store attach to them. A
command that fails as commands may (a store that cannot be reached, a password the
database refuses, a setting or file that cannot be used) prints one line to stderr and
exits with status 1, never a traceback.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.charts import human_count, human_dollars, human_seconds
from app.models.metrics import MetricsAggregatesSchema
from app.services import Services
from app.shared_settings import ConfigError
from app.storage.stores import CompactionReport

if TYPE_CHECKING:
    from app.storage.postgres import PostgresDatabase

DEFAULT_KEEP_DAYS = 30
COMMAND_ERRORS = (OSError, ConfigError)
"""How a command may fail without a bug: a store that cannot be reached or written
(:class:`~app.storage.stores.StoreUnavailable` is an OSError), a file that cannot be
read, a setting or routing file that cannot be used."""


class CommandGroup(AppGroup):
    """A group whose commands end with one line on stderr (``Error: ...``) and exit
    status 1 when they fail as in :data:`COMMAND_ERRORS`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except COMMAND_ERRORS as exc:
            raise click.ClickException(" ".join(str(exc).split()) or repr(exc)) from exc


metrics_cli = CommandGroup("metrics", help="Work with the metrics store.")
tasks_cli = CommandGroup("tasks", help="Work with the task store.")
db_cli = CommandGroup("db", help="Work with the PostgreSQL database named by "
                      "AGENT_DATABASE_URL.")
store_cli = CommandGroup("store", help="Move stores between backends.")

keep_days_option = click.option(
    "--keep-days", type=click.IntRange(min=0), default=DEFAULT_KEEP_DAYS, show_default=True,
    help="Keep what is newer than this many days (0 needs --yes: it keeps nothing final).",
)
yes_option = click.option("--yes", is_flag=True, help="Confirm --keep-days 0.")


def _services() -> Services:
    return current_app.extensions["agent"]


def _compact(
    store: str, compact: Callable[[int], CompactionReport], keep_days: int, yes: bool
) -> None:
    if keep_days == 0 and not yes:
        raise click.UsageError(f"--keep-days 0 drops every finished entry of the {store} "
                               "store; add --yes if that is what you want.")
    click.echo(f"{store}: {compact(keep_days).summary()}")


@metrics_cli.command("compact")
@keep_days_option
@yes_option
def compact_metrics(keep_days: int, yes: bool) -> None:
    """Rewrite metrics.jsonl keeping only records newer than --keep-days days."""
    _compact("metrics", _services().metrics.compact, keep_days, yes)


@tasks_cli.command("compact")
@keep_days_option
@yes_option
def compact_tasks(keep_days: int, yes: bool) -> None:
    """Rewrite tasks.jsonl as each task's latest state, dropping old final tasks."""
    _compact("tasks", _services().tasks.compact, keep_days, yes)


def table(headers: Sequence[str], rows: list[Sequence[Any]]) -> str:
    """Rows under headers; the first column left-aligned, the others right-aligned."""
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


UNKNOWN = "-"
"""A table's cell for a value no record of its row carries (never a 0)."""


def _or_unknown(value: float | None, human: Callable[[float], str],
                unknown: str = UNKNOWN) -> str:
    return unknown if value is None else human(value)


def _queue_wait(wait: dict[str, Any]) -> str:
    if not wait["count"]:
        return "Queue wait: unknown (no record in the window carries it)"
    return (f"Queue wait: p50 {human_seconds(wait['p50_seconds'])}, "
            f"p95 {human_seconds(wait['p95_seconds'])} (creation to first claim, over "
            f"{wait['count']} task{'s' if wait['count'] != 1 else ''})")


def _usage(usage: dict[str, Any]) -> list[str]:
    """The window's tokens and cost, each "unknown" when no record carries it."""
    if not usage["tasks_with_usage"]:
        return ["Usage: unknown (no record in the window carries tokens or a cost)"]
    tokens = ", ".join(
        f"{name} {_or_unknown(usage[key], human_count, 'unknown')}"
        for name, key in (("input", "input_tokens"), ("output", "output_tokens"),
                          ("cache read", "cache_read_input_tokens"),
                          ("cache written", "cache_creation_input_tokens")))
    with_usage = usage["tasks_with_usage"]
    lines = [f"Tokens: {tokens} ({with_usage} task{'s' if with_usage != 1 else ''} "
             "reported tokens or a cost)"]
    if usage["cost_usd"] is None:
        lines.append("Cost: unknown (no record in the window carries it)")
    elif usage["cost_per_completed_task"] is None:
        lines.append(f"Cost: {human_dollars(usage['cost_usd'])}, per completed task "
                     "unknown (no task completed)")
    else:
        lines.append(f"Cost: {human_dollars(usage['cost_usd'])}, "
                     f"{human_dollars(usage['cost_per_completed_task'])} per completed task")
    return lines


def _usage_table(label: str, breakdown: dict[str, dict[str, Any]]) -> str:
    """Each row's cost and tokens, with a note when some are unknown."""
    rows: list[Sequence[Any]] = [
        (name, _or_unknown(row["cost_usd"], human_dollars),
         _or_unknown(row["input_tokens"], human_count),
         _or_unknown(row["output_tokens"], human_count))
        for name, row in sorted(breakdown.items())
    ]
    text = table((label, "cost", "input tokens", "output tokens"), rows)
    if any(UNKNOWN in row[1:] for row in rows):
        text += f"\n({UNKNOWN}: no record of this {label} in the window carries it)"
    return text


def render(aggregates: dict[str, Any]) -> str:
    """``flask metrics show`` without ``--json``: the window's outcomes and durations; its
    queue wait, tokens and cost in human units; then per task type and per model, their
    cost and tokens, and their outcomes and durations."""
    totals, times = aggregates["success_rate"], aggregates["execution_time"]
    days = aggregates["window_days"]
    parts = [
        f"Last {days} day{'s' if days != 1 else ''}: {totals['total']} finished, "
        f"{totals['completed']} completed, {totals['failed']} failed, "
        f"success rate {totals['rate']:.0%}",
        f"Execution time: p50 {times['p50_seconds']} s, p95 {times['p95_seconds']} s",
    ]
    if not totals["total"]:
        parts.append("No records in this window.")
        return "\n".join(parts)
    parts.append(_queue_wait(aggregates["queue_wait"]))
    parts += _usage(aggregates["usage"])
    by_type = aggregates["by_task_type"]
    by_model = aggregates["by_model"]
    if aggregates["usage"]["tasks_with_usage"]:
        parts += ["", _usage_table("task type", by_type), "", _usage_table("model", by_model)]
    parts += ["", table(
        ("task type", "count", "completed", "failed", "success rate"),
        [(name, row["count"], row["completed"], row["failed"], f"{row['success_rate']:.0%}")
         for name, row in sorted(by_type.items())],
    )]
    parts += ["", table(
        ("model", "count", "avg duration (s)"),
        [(name, row["count"], row["avg_duration"]) for name, row in sorted(by_model.items())],
    )]
    return "\n".join(parts)


@metrics_cli.command("show")
@click.option("--window-days", type=click.IntRange(1, 365), default=None,
              help="Rolling window in days (default: METRICS_WINDOW_DAYS).")
@click.option("--json", "as_json", is_flag=True, help="Print the aggregates as JSON.")
def show(window_days: int | None, as_json: bool) -> None:
    """The rolling-window aggregates, as GET /api/agent/metrics reports them."""
    aggregates = _services().metrics.get_aggregates(window_days)
    if as_json:
        click.echo(json.dumps(MetricsAggregatesSchema().dump(aggregates), indent=2))
    else:
        click.echo(render(aggregates))


def _database() -> PostgresDatabase:
    """The configured database. psycopg is imported here, not when the app loads: a
    server on the JSONL files starts without it."""
    from app.storage.postgres import PostgresDatabase

    url = current_app.config["AGENT_DATABASE_URL"]
    if not url:
        raise click.UsageError("AGENT_DATABASE_URL is not set: name the PostgreSQL database, "
                               "e.g. AGENT_DATABASE_URL=postgresql://user:password@host/agent")
    return PostgresDatabase(url)


@db_cli.command("upgrade")
def upgrade_database() -> None:
    """Create the schema, or bring it to this release's version (nothing is dropped)."""
    from app.storage.postgres import schema

    database = _database()
    with database.connect() as conn:
        before, after = schema.upgrade(conn)
    if before == after:
        click.echo(f"{database.location}: schema version {after}, up to date")
    else:
        click.echo(f"{database.location}: schema upgraded from version {before} to {after}")


@store_cli.command("copy")
@click.option("--from", "source", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder holding metrics.jsonl and tasks.jsonl (an AGENT_LOGS_DIR).")
def copy_store(source: Path) -> None:
    """Copy the JSONL stores of a folder into the database. Run it again after an
    interruption: what is there already is left alone, so nothing doubles."""
    from app.storage.store_copy import copy_stores

    database = _database()
    try:
        counts = copy_stores(source, database)
    finally:
        database.close()
    click.echo(f"{source} -> {database.location}: {counts.summary()}")


def init_app(app: Flask) -> None:
    for group in (metrics_cli, tasks_cli, db_cli, store_cli):
        app.cli.add_command(group)
