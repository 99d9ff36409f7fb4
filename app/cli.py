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


def render(aggregates: dict[str, Any]) -> str:
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
    by_type = aggregates["by_task_type"]
    parts += ["", table(
        ("task type", "count", "completed", "failed", "success rate"),
        [(name, row["count"], row["completed"], row["failed"], f"{row['success_rate']:.0%}")
         for name, row in sorted(by_type.items())],
    )]
    by_model = aggregates["by_model"]
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
