"""The raw metric records, filtered, as CSV or JSON Lines, produced a chunk at a time.

Records come from ``MetricsService.stored_records``: the same valid, first-per-task_id
records the aggregates count, read from the store in bounded chunks, so an export of a
large store never holds it in memory. A record's optional fields are absent from its
JSON line when unknown, and empty cells of its CSV row.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.services.metrics_service import MetricsService
from app.storage.metric_records import MetricRecord, as_stored, to_micros

FIELDS = (*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS)
"""The CSV columns: every record's fields, then the optional ones."""
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CHUNK_BYTES = 64 * 1024


def matching(
    records: Iterable[MetricRecord],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    task_type: str | None = None,
    model: str | None = None,
    status: str | None = None,
) -> Iterator[MetricRecord]:
    """Records created in [since, until) with the given labels (None matches all)."""
    since_us = to_micros(since) if since else None
    until_us = to_micros(until) if until else None
    completed = None if status is None else status == "completed"
    for record in records:
        if (
            (since_us is None or record.created_us >= since_us)
            and (until_us is None or record.created_us < until_us)
            and (task_type is None or record.task_type == task_type)
            and (model is None or record.model == model)
            and (completed is None or record.completed == completed)
        ):
            yield record


def _jsonl_lines(records: Iterable[MetricRecord]) -> Iterator[bytes]:
    for record in records:
        yield orjson.dumps(as_stored(record)) + b"\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula."""


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would take for a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def _csv_lines(records: Iterable[MetricRecord]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: spreadsheet_safe(value)
                         for name, value in as_stored(record).items()})
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


LINE_WRITERS = {"csv": _csv_lines, "jsonl": _jsonl_lines}


def export(metrics: MetricsService, file_format: str, **filters: Any) -> Iterator[bytes]:
    """The matching records in store order, encoded, in chunks of about ``CHUNK_BYTES``."""
    chunk: list[bytes] = []
    size = 0
    for line in LINE_WRITERS[file_format](matching(metrics.stored_records(), **filters)):
        chunk.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    yield b"".join(chunk)
