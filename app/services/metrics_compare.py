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
from app.storage.metric_records import MICROS, MetricRecord, to_micros


class ArmSample(NamedTuple):
    """One arm's records as parallel arrays."""

    completed: np.ndarray
    """bool: whether each task completed."""
    duration_us: np.ndarray
    """int64: each task's duration in microseconds, as the aggregates keep it."""
    cost_usd: np.ndarray
    """float64: each task's cost, NaN when unknown."""

    def known_costs(self) -> np.ndarray:
        return self.cost_usd[~np.isnan(self.cost_usd)]


def _label(record: MetricRecord, by: str) -> Any:
    return record.model if by == "model" else record.optional.get(by)


def _sample(records: list[MetricRecord]) -> ArmSample:
    return ArmSample(
        np.array([record.completed for record in records], dtype=bool),
        np.array([record.duration_us for record in records], dtype=np.int64),
        np.array([record.optional.get("cost_usd", np.nan) for record in records],
                 dtype=np.float64),
    )


def arm_samples(
    metrics: MetricsService, by: str, a: str, b: str, *, window_days: int,
    task_type: str | None = None,
) -> tuple[ArmSample, ArmSample]:
    """The samples of arms ``a`` and ``b``: the records created within the last
    ``window_days`` days (the aggregates' window), of ``task_type`` if given.

    This reads the records :meth:`MetricsService.stored_records` reads for the export,
    every one of the store with its optional fields: exact on both backends, but
    O(records stored) per comparison. A faster path, over the in-memory columns and in
    SQL, is yet to come.
    """
    first_us, last_us = window_bounds(to_micros(metrics.clock()), window_days)
    arms: dict[str, list[MetricRecord]] = {a: [], b: []}
    for record in metrics.stored_records():
        if (first_us <= record.created_us <= last_us
                and (task_type is None or record.task_type == task_type)):
            arm = arms.get(_label(record, by))
            if arm is not None:
                arm.append(record)
    return _sample(arms[a]), _sample(arms[b])


def _arm_summary(value: str, sample: ArmSample) -> dict[str, Any]:
    """Counts, success rate (0.0 without tasks, as the aggregates say it), nearest-rank
    percentiles (0 without tasks, likewise) and the average of the known costs."""
    n = len(sample.completed)
    completed = int(sample.completed.sum())
    durations = np.sort(sample.duration_us)
    costs = sample.known_costs()
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
    cost = stats.welch_t_test(sample_a.known_costs(), sample_b.known_costs())
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
