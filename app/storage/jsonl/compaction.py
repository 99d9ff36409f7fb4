"""Compaction of a JSONL store: rewrite it with what a keeper keeps, counting the rest."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from app.storage.jsonl.log_writer import JsonlLog
from app.storage.stores import CompactionReport

log = logging.getLogger(__name__)

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
