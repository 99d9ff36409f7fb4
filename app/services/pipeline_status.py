"""What operators look at when something is wrong: counts, the tasks that need a person,
and the pipeline's status with the rules that flag trouble.

Attention rules (documented in the README):

- ``stuck``: a ``running`` task not updated for ``STUCK_RUNNING_SECONDS`` (a runner
  heartbeats every third of its lease, so it has stopped reporting), or a ``pending``
  task waiting for ``STUCK_PENDING_SECONDS`` (no runner takes it).
- ``repeated_failures``: a task type whose last ``REPEATED_FAILURES`` or more finished
  tasks all failed.
- ``low_success_rate``: over the last day, at least ``LOW_RATE_MIN_TASKS`` finished tasks
  and a success rate under ``LOW_RATE``.
- ``flags``: one line of text per problem found, for people.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.clock import parse_iso
from app.models.metrics import FINAL_STATUSES
from app.services.metrics_service import MetricsService
from app.services.task_service import TaskService

STUCK_RUNNING_SECONDS = 15 * 60
STUCK_PENDING_SECONDS = 60 * 60
REPEATED_FAILURES = 3
LOW_RATE, LOW_RATE_MIN_TASKS, LOW_RATE_WINDOW_DAYS = 0.8, 5, 1
LIVE_TAIL_LINES = 20
RECENT_COMPLETED = 10
PENDING_SHOWN = 100
"""The oldest pending tasks listed; GET /tasks/count has how many there are."""
ATTENTION_STATUSES = ("needs_decision", "failed")


def _newest_first(tasks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(tasks, key=lambda task: (task["updated_at"], task["id"]), reverse=True)


def _age_seconds(stamp: str, now: datetime) -> float:
    return max((now - parse_iso(stamp)).total_seconds(), 0.0)


def counts(tasks: TaskService) -> dict[str, Any]:
    by_status = tasks.counts_by_status()
    return {"total": sum(by_status.values()), "by_status": by_status}


def attention(tasks: TaskService, limit: int) -> dict[str, Any]:
    """Tasks that need a person (``needs_decision`` or ``failed``), newest first."""
    needing = _newest_first(task for task in tasks.states()
                            if task["status"] in ATTENTION_STATUSES)
    return {"tasks": needing[:limit], "total": len(needing)}


def _repeated_failures(final: list[dict[str, Any]]) -> list[dict[str, Any]]:
    streaks: dict[str, int] = {}
    broken: set[str] = set()
    for task in final:  # newest first
        task_type = task["task_type"]
        if task_type in broken:
            continue
        if task["status"] == "failed":
            streaks[task_type] = streaks.get(task_type, 0) + 1
        else:
            broken.add(task_type)
    return [{"task_type": task_type, "consecutive_failures": count}
            for task_type, count in sorted(streaks.items()) if count >= REPEATED_FAILURES]


def _low_success_rate(metrics: MetricsService) -> dict[str, Any] | None:
    totals = metrics.get_aggregates(LOW_RATE_WINDOW_DAYS)["success_rate"]
    if totals["total"] >= LOW_RATE_MIN_TASKS and totals["rate"] < LOW_RATE:
        return {"window_days": LOW_RATE_WINDOW_DAYS, "rate": totals["rate"],
                "total": totals["total"]}
    return None


def _flags(stuck: list[dict[str, Any]], repeated: list[dict[str, Any]],
           low_rate: dict[str, Any] | None) -> list[str]:
    flags = [f"{task['id']} {task['status']} for {task['age_seconds'] / 60:.0f} min"
             for task in stuck]
    flags += [f"{row['task_type']}: the last {row['consecutive_failures']} finished tasks "
              "failed" for row in repeated]
    if low_rate:
        flags.append(f"success rate {low_rate['rate']:.0%} over the last day "
                     f"({low_rate['total']} tasks)")
    return flags


def pipeline_status(tasks: TaskService, metrics: MetricsService) -> dict[str, Any]:
    now = tasks.clock()
    states = tasks.states()
    running = sorted((task for task in states if task["status"] == "running"),
                     key=lambda task: (task.get("started_at") or task["created_at"], task["id"]))
    pending = sorted((task for task in states if task["status"] == "pending"),
                     key=lambda task: (task["created_at"], task["id"]))
    final = _newest_first(task for task in states if task["status"] in FINAL_STATUSES)
    stuck = [
        {**task, "age_seconds": _age_seconds(task[stamp], now)}
        for task, stamp, limit in [
            *((task, "updated_at", STUCK_RUNNING_SECONDS) for task in running),
            *((task, "created_at", STUCK_PENDING_SECONDS) for task in pending),
        ]
        if _age_seconds(task[stamp], now) >= limit
    ]
    repeated = _repeated_failures(final)
    low_rate = _low_success_rate(metrics)
    return {
        "running": [{**task, "live_tail": tasks.log_tail(task["id"], LIVE_TAIL_LINES)}
                    for task in running],
        "pending": [{**task, "wait_seconds": _age_seconds(task["created_at"], now)}
                    for task in pending[:PENDING_SHOWN]],
        "recent_completed": [task for task in final if task["status"] == "completed"]
        [:RECENT_COMPLETED],
        "attention": {"stuck": stuck, "repeated_failures": repeated,
                      "low_success_rate": low_rate, "flags": _flags(stuck, repeated, low_rate)},
    }
