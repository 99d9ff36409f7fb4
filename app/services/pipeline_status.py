"""What operators look at when something is wrong: counts, the tasks that need a person,
and the pipeline's status with the rules that flag trouble.

Attention rules (documented in docs/api.md):

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

from datetime import datetime
from typing import Any

from app.clock import parse_iso
from app.models.agent import TASK_TYPES
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


def _age_seconds(stamp: str, now: datetime) -> float:
    return max((now - parse_iso(stamp)).total_seconds(), 0.0)


def counts(tasks: TaskService) -> dict[str, Any]:
    by_status = tasks.counts_by_status()
    return {"total": sum(by_status.values()), "by_status": by_status}


def attention(tasks: TaskService, limit: int) -> dict[str, Any]:
    """Tasks that need a person (``needs_decision`` or ``failed``), newest first."""
    needing, total = tasks.find(ATTENTION_STATUSES, by="updated_at", limit=limit)
    return {"tasks": needing, "total": total}


def _failure_streak(tasks: TaskService, task_type: str) -> int:
    """How many of the task type's last finished tasks failed in a row, read in pages
    that double until a completed task ends the streak."""
    size = REPEATED_FAILURES + 1
    while True:
        final, total = tasks.find(FINAL_STATUSES, task_type=task_type, by="updated_at",
                                  limit=size)
        statuses = [task["status"] for task in final]
        if "completed" in statuses:
            return statuses.index("completed")
        if len(final) == total:
            return total
        size *= 2


def _repeated_failures(tasks: TaskService) -> list[dict[str, Any]]:
    streaks = {task_type: _failure_streak(tasks, task_type) for task_type in TASK_TYPES}
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
    """Every running task, the oldest pending ones, the last completed, and what needs
    attention. Stuck pending tasks are looked for among the pending tasks shown (the
    oldest), so a long queue costs no more than a short one."""
    now = tasks.clock()
    running = sorted(tasks.find(("running",))[0],
                     key=lambda task: (task.get("started_at") or task["created_at"], task["id"]))
    pending, _ = tasks.find(("pending",), newest_first=False, limit=PENDING_SHOWN)
    stuck = [
        {**task, "age_seconds": _age_seconds(task[stamp], now)}
        for task, stamp, limit in [
            *((task, "updated_at", STUCK_RUNNING_SECONDS) for task in running),
            *((task, "created_at", STUCK_PENDING_SECONDS) for task in pending),
        ]
        if _age_seconds(task[stamp], now) >= limit
    ]
    repeated = _repeated_failures(tasks)
    low_rate = _low_success_rate(metrics)
    completed, _ = tasks.find(("completed",), by="updated_at", limit=RECENT_COMPLETED)
    return {
        "running": [{**task, "live_tail": tasks.log_tail(task["id"], LIVE_TAIL_LINES)}
                    for task in running],
        "pending": [{**task, "wait_seconds": _age_seconds(task["created_at"], now)}
                    for task in pending],
        "recent_completed": completed,
        "attention": {"stuck": stuck, "repeated_failures": repeated,
                      "low_success_rate": low_rate, "flags": _flags(stuck, repeated, low_rate)},
    }
