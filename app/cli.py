"""``flask`` commands: ``flask --app wsgi metrics ...`` and ``flask --app wsgi tasks ...``.

The click groups are defined here once; commands for either store attach to them.
"""
from __future__ import annotations

from collections.abc import Callable

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.services import Services
from app.services.retention import CompactionReport
from app.storage import StoreUnavailable

DEFAULT_KEEP_DAYS = 30

metrics_cli = AppGroup("metrics", help="Work with the metrics store.")
tasks_cli = AppGroup("tasks", help="Work with the task store.")

keep_days_option = click.option(
    "--keep-days", type=click.IntRange(min=0), default=DEFAULT_KEEP_DAYS, show_default=True,
    help="Keep what is newer than this many days.",
)


def _services() -> Services:
    return current_app.extensions["agent"]


def _compact(store: str, compact: Callable[[int], CompactionReport], keep_days: int) -> None:
    try:
        report = compact(keep_days)
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{store}: {report.summary()}")


@metrics_cli.command("compact")
@keep_days_option
def compact_metrics(keep_days: int) -> None:
    """Rewrite metrics.jsonl keeping only records newer than --keep-days days."""
    _compact("metrics", _services().metrics.compact, keep_days)


@tasks_cli.command("compact")
@keep_days_option
def compact_tasks(keep_days: int) -> None:
    """Rewrite tasks.jsonl as each task's latest state, dropping old final tasks."""
    _compact("tasks", _services().tasks.compact, keep_days)


def init_app(app: Flask) -> None:
    app.cli.add_command(metrics_cli)
    app.cli.add_command(tasks_cli)
