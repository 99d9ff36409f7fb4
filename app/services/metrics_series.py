"""Numbers over the metric columns beyond the rolling window: time buckets.

Every function here takes the :class:`RecordColumns` of a :class:`MetricsService` (see
``MetricsService.read_columns``) and only reads them. Percentiles are nearest-rank, the
same definition ``GET /api/agent/metrics`` uses.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from app.clock import isoformat
from app.storage.metric_columns import NANOS, UNKNOWN, RecordColumns
from app.storage.metric_records import from_micros, to_micros
from app.services.metrics_service import MetricsService
from app.services.metrics_window import (
    BREAKDOWN_SUMS,
    MICROS,
    known_sum,
    nearest_rank,
    window_bounds,
)

BUCKET_SECONDS = {"hour": 3600, "day": 86400}


def default_bucket(window_days: int) -> str:
    """Hours for windows of up to two days, days beyond."""
    return "hour" if window_days <= 2 else "day"


def _running_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running sums of the known values and running counts of them, from 0."""
    known = values != UNKNOWN
    return (np.concatenate([[0], np.cumsum(np.where(known, values, 0))]),
            np.concatenate([[0], np.cumsum(known)]))


def _bucket_sum(running: tuple[np.ndarray, np.ndarray], low: int, high: int,
                scale: int = 1) -> float | int | None:
    sums, counts = running
    return known_sum(int(sums[high] - sums[low]), int(counts[high] - counts[low]), scale)


def timeseries(
    columns: RecordColumns, now: datetime, window_days: int, bucket: str
) -> list[dict[str, Any]]:
    """Finished tasks, p50/p95, cost and tokens per UTC-aligned hour or day over the
    window.

    The window holds the records the rolling aggregates count (created in the last
    ``window_days`` days, up to ``now``), so the buckets add up to the aggregates'
    totals. The buckets run from the one holding the cutoff to the one holding ``now``,
    empty ones included.
    """
    width = BUCKET_SECONDS[bucket] * MICROS
    first_us, last_us = window_bounds(to_micros(now), window_days)
    created = columns.column("created_us")
    rows = slice(int(np.searchsorted(created, first_us, side="left")),
                 int(np.searchsorted(created, last_us, side="right")))
    created = created[rows]
    durations = columns.column("duration_us")[rows]
    completed = columns.column("completed")[rows].astype(np.int64)

    first_start = first_us // width * width
    count = (last_us - first_start) // width + 1
    edges = first_start + width * np.arange(count + 1, dtype=np.int64)
    bounds = np.searchsorted(created, edges, side="left")
    completed_before = np.concatenate([[0], np.cumsum(completed)])
    sums_before = {name: _running_sums(columns.column(name)[rows]) for name in BREAKDOWN_SUMS}

    series = []
    for index in range(count):
        low, high = int(bounds[index]), int(bounds[index + 1])
        done = int(completed_before[high] - completed_before[low])
        ordered = np.sort(durations[low:high])
        series.append({
            "start": isoformat(from_micros(int(edges[index]))),
            "completed": done,
            "failed": high - low - done,
            "p50_seconds": nearest_rank(ordered, 50) / MICROS,
            "p95_seconds": nearest_rank(ordered, 95) / MICROS,
            "cost_usd": _bucket_sum(sums_before["cost_nanos"], low, high, NANOS),
            "input_tokens": _bucket_sum(sums_before["input_tokens"], low, high),
            "output_tokens": _bucket_sum(sums_before["output_tokens"], low, high),
        })
    return series


def service_timeseries(
    metrics: MetricsService, window_days: int, bucket: str
) -> list[dict[str, Any]]:
    """:func:`timeseries` of a service's records, at the service's clock."""
    now = metrics.clock()
    return metrics.read_columns(
        lambda columns: timeseries(columns, now, window_days, bucket),
        since_us=window_bounds(to_micros(now), window_days)[0],
    )
