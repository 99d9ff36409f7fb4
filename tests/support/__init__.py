"""Helpers shared by the tests: a movable clock, apps closed at the end of each test,
JSONL bytes. The real servers (gunicorn, PostgreSQL) come from :mod:`bench.servers`,
which the benchmarks use too."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from flask import Flask

from app import create_app
from app.clock import utc_now
from app.services.metrics_service import MetricsService
from app.storage.jsonl.log_reader import LogReader
from app.storage.jsonl.metrics import JsonlMetricStore
from bench.servers import ROOT, GunicornServer, free_port, stop_process

__all__ = ["ROOT", "GunicornServer", "free_port", "stop_process", "FakeClock", "jsonl_metrics",
           "open_app", "close_open_apps", "jsonl", "Batch", "poll"]


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def jsonl_metrics(path: Path, clock: Callable[[], datetime] | None = None, *,
                  fsync: bool = False) -> MetricsService:
    """A metrics service on the JSONL store at ``path``."""
    return MetricsService(JsonlMetricStore(path, fsync=fsync), clock=clock or utc_now)


_open_apps: list[Flask] = []


def open_app(settings: dict[str, object]) -> Flask:
    """``create_app(settings)``, whose store files and database connections are let go
    when the test ends (conftest). Left to the garbage collector, a database pool whose
    connections are still opening in the background can be collected on one of its own
    threads, which cannot stop themselves, and pytest reports that as an error of
    whichever test runs then."""
    made = create_app(settings)
    _open_apps.append(made)
    return made


def close_open_apps() -> None:
    while _open_apps:
        services = _open_apps.pop().extensions["agent"]
        for service in (services.tasks, services.metrics):
            service.close_files()


def jsonl(lines: Iterable[object]) -> bytes:
    """``lines`` as the bytes of a JSONL file, one line each."""
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


@dataclass
class Batch:
    """The lines of one chunk a reader read: ``reset`` when the file was replaced or
    truncated and ``records`` (offset, record) start again from its beginning."""

    reset: bool
    records: list[tuple[int, dict[str, Any]]]


def poll(reader: LogReader) -> list[Batch]:
    """What ``reader`` reads next, parsed."""
    return [Batch(chunk.reset, chunk.decode()) for chunk in reader.poll_chunks()]
