"""A/B comparison of two arms of the metric records: the records of the window whose
``by`` field (``prompt_variant``, ``skill_version``, ``model`` or ``executor``) is ``a``,
against those where it is ``b``, summarised and tested (see
:mod:`app.services.ab_statistics`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from app.services import ab_statistics as stats
from app.services.metrics_service import MetricsService
from app.services.metrics_window import nearest_rank, window_bounds
from app.storage.metric_columns import NANOS, UNKNOWN, RecordColumns
from app.storage.metric_records import MICROS, to_micros


class ArmSample(NamedTuple):
    """One arm's records as parallel arrays."""

    completed: np.ndarray
    """bool: whether each task completed."""
    duration_us: np.ndarray
    """int64: each task's duration in microseconds, as the aggregates keep it."""
    known_costs: np.ndarray
    """float64: the costs of the tasks whose cost is known."""


def _window_arms(
    columns: RecordColumns, first_us: int, last_us: int, by: str, values: tuple[str, str],
    task_type: str | None,
) -> list[ArmSample]:
    created = columns.column("created_us")
    rows = slice(int(np.searchsorted(created, first_us, side="left")),
                 int(np.searchsorted(created, last_us, side="right")))
    labels = columns.models if by == "model" else columns.labels[by]
    codes = columns.column("model_code" if by == "model" else by)[rows]
    wanted: np.ndarray | bool = True
    if task_type is not None:
        wanted = columns.column("type_code")[rows] == columns.task_types.code(task_type)
    arms = []
    for value in values:
        picked = rows.start + np.flatnonzero(wanted & (codes == labels.code(value)))
        nanos = columns.column("cost_nanos")[picked]
        arms.append(ArmSample(
            columns.column("completed")[picked].astype(bool),
            columns.column("duration_us")[picked],
            nanos[nanos != UNKNOWN] / NANOS,
        ))
    return arms


def arm_samples(
    metrics: MetricsService, by: str, a: str, b: str, *, window_days: int,
    task_type: str | None = None,
) -> tuple[ArmSample, ArmSample]:
    """The samples of arms ``a`` and ``b``: the records created within the last
    ``window_days`` days (the aggregates' window), of ``task_type`` if given, read off
    the in-memory columns."""
    first_us, last_us = window_bounds(to_micros(metrics.clock()), window_days)
    arm_a, arm_b = metrics.read_columns(
        lambda columns: _window_arms(columns, first_us, last_us, by, (a, b), task_type),
        since_us=first_us)
    return arm_a, arm_b


def _arm_summary(value: str, sample: ArmSample) -> dict[str, Any]:
    """Counts, success rate (0.0 without tasks, as the aggregates say it), nearest-rank
    percentiles (0 without tasks, likewise) and the average of the known costs."""
    n = len(sample.completed)
    completed = int(sample.completed.sum())
    durations = np.sort(sample.duration_us)
    costs = sample.known_costs
    return {
        "value": value,
        "n": n,
        "completed": completed,
        "failed": n - completed,
        "success_rate": completed / n if n else 0.0,
        "success_rate_ci95": stats.wilson_interval(completed, n),
        "p50_seconds": nearest_rank(durations, 50) / MICROS,
        "p95_seconds": nearest_rank(durations, 95) / MICROS,
        "avg_cost_usd": float(costs.mean()) if len(costs) else None,
        "n_with_cost": len(costs),
    }


def _difference(delta: float | None, outcome: stats.Outcome | None) -> dict[str, Any]:
    return {"delta": delta, "p_value": None if outcome is None else outcome.p_value}


def compare(
    metrics: MetricsService, by: str, a: str, b: str, *, task_type: str | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Arms ``a`` and ``b`` within the last ``window_days`` days (default: the
    service's), each summarised, their differences (b - a) with two-sided p-values, and
    a verdict on each of success, duration and cost at ``stats.ALPHA``.

    A difference is None where an arm has no value to compare (no tasks, or no known
    cost); a p-value is None where an arm has fewer than ``stats.MIN_PER_ARM`` values,
    or where every value is the same in both.
    """
    window_days = window_days or metrics.window_days
    sample_a, sample_b = arm_samples(metrics, by, a, b, window_days=window_days,
                                     task_type=task_type)
    arm_a, arm_b = _arm_summary(a, sample_a), _arm_summary(b, sample_b)
    both_run = bool(arm_a["n"] and arm_b["n"])
    both_cost = bool(arm_a["n_with_cost"] and arm_b["n_with_cost"])
    success = stats.fisher_exact_test(sample_a.completed, sample_b.completed)
    duration = stats.mann_whitney_test(sample_a.duration_us, sample_b.duration_us)
    cost = stats.welch_t_test(sample_a.known_costs, sample_b.known_costs)
    return {
        "by": by,
        "task_type": task_type,
        "window_days": window_days,
        "a": arm_a,
        "b": arm_b,
        "difference": {
            "success_rate": _difference(
                arm_b["success_rate"] - arm_a["success_rate"] if both_run else None, success),
            "p50_seconds": _difference(
                arm_b["p50_seconds"] - arm_a["p50_seconds"] if both_run else None, duration),
            "avg_cost_usd": _difference(
                arm_b["avg_cost_usd"] - arm_a["avg_cost_usd"] if both_cost else None, cost),
        },
        "verdict": {
            "success": stats.verdict(success, higher_is_better=True),
            "duration": stats.verdict(duration, higher_is_better=False),
            "cost": stats.verdict(cost, higher_is_better=False),
        },
    }
