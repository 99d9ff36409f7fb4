"""Compaction shared by the stores: the report of what it did, and running it."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.storage import JsonlLog

log = logging.getLogger(__name__)


@dataclass
class CompactionReport:
    """Counts of one compaction: lines kept and why the others went."""

    kept: int = 0
    expired: int = 0
    superseded: int = 0
    invalid: int = 0

    def summary(self) -> str:
        return (f"kept {self.kept}, dropped {self.expired} older than the cutoff, "
                f"{self.superseded} superseded, {self.invalid} invalid")


def cutoff(now: datetime, keep_days: int) -> datetime:
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    return now - timedelta(days=keep_days)


Keeper = Callable[[Iterator[dict[str, Any]], "CompactionReport"], Iterable[dict[str, Any]]]
"""Given a store's records in order and the report to count into, yields those to keep."""


def compact(
    store: JsonlLog, keep: Keeper, carry: Callable[[Any], Any] | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> CompactionReport:
    """Rewrite ``store`` with what ``keep`` yields (see :meth:`JsonlLog.rewrite` for
    ``carry`` and ``before_replace``); lines that do not parse count as invalid."""
    report = CompactionReport()
    unreadable = store.rewrite(lambda records: keep(records, report), carry, before_replace)
    report.invalid += unreadable
    log.info("compacted %s: %s", store.path, report.summary())
    return report
