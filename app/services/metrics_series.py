"""Numbers over the metric columns beyond the rolling window: time buckets and totals.

Every function here takes the :class:`RecordColumns` of a :class:`MetricsService` (see
``MetricsService.read_columns``) and only reads them. Percentiles are nearest-rank, the
same definition ``GET /api/agent/metrics`` uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from app.clock import isoformat
from app.services.metric_columns import RecordColumns
from app.services.metric_records import EPOCH, to_micros
from app.services.metrics_service import MetricsService
from app.services.metrics_window import MICROS, nearest_rank, window_bounds

BUCKET_SECONDS = {"hour": 3600, "day": 86400}
DURATION_BOUNDS_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
"""Upper bounds of the duration histogram: agent tasks take from seconds to hours."""


def default_bucket(window_days: int) -> str:
    """Hours for windows of up to two days, days beyond."""
    return "hour" if window_days <= 2 else "day"


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def timeseries(
    columns: RecordColumns, now: datetime, window_days: int, bucket: str
) -> list[dict[str, Any]]:
    """Finished tasks and p50/p95 per UTC-aligned hour or day over the window.

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


@dataclass(frozen=True)
class DurationHistogram:
    """Durations of one (task_type, model): cumulative counts per upper bound (the last
    one is +Inf), and the sum of all durations."""

    task_type: str
    model: str
    cumulative_counts: list[int]
    sum_seconds: float


def _pair_codes(columns: RecordColumns) -> np.ndarray:
    """One code per (task_type, model) pair: ``type_code * len(models) + model_code``."""
    return (
        columns.column("type_code").astype(np.int64) * len(columns.models)
        + columns.column("model_code")
    )


def _pair_names(columns: RecordColumns, code: int) -> tuple[str, str]:
    type_code, model_code = divmod(code, len(columns.models))
    return columns.task_types.names[type_code], columns.models.names[model_code]


def finished_counts(columns: RecordColumns) -> dict[tuple[str, str, str], int]:
    """How many records there are per (task_type, model, status), over the whole store."""
    keys = _pair_codes(columns) * 2 + columns.column("completed")
    codes, counts = np.unique(keys, return_counts=True)
    return {
        (*_pair_names(columns, int(code) // 2), "completed" if code % 2 else "failed"):
            int(count)
        for code, count in zip(codes, counts)
    }


def duration_histograms(
    columns: RecordColumns, bounds_seconds: tuple[float, ...] = DURATION_BOUNDS_SECONDS
) -> list[DurationHistogram]:
    """A cumulative histogram of durations per (task_type, model), over the whole store."""
    pairs = _pair_codes(columns)
    durations = columns.column("duration_us")
    bounds_us = np.array([round(bound * MICROS) for bound in bounds_seconds], np.int64)
    slots = len(bounds_us) + 1
    slot = np.searchsorted(bounds_us, durations, side="left")
    codes, inverse = np.unique(pairs, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse * slots + slot, minlength=len(codes) * slots)
    cumulative = np.cumsum(counts.reshape(len(codes), slots), axis=1)
    sums_us = np.zeros(len(codes), np.int64)
    np.add.at(sums_us, inverse, durations)
    return [
        DurationHistogram(*_pair_names(columns, int(code)),
                          [int(value) for value in cumulative[row]],
                          int(sums_us[row]) / MICROS)
        for row, code in enumerate(codes)
    ]
