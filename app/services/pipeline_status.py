"""What operators look at when something is wrong: counts, the tasks that need a person,
and the pipeline's status with the rules that flag trouble.

Pending tasks are shown in two parts: those *waiting* (a claim may take them now, listed
in the order claims take them) and those *scheduled* (their ``run_after`` has not come).
The store orders tasks by time only, so both are sorted here from every pending task.

Attention rules (documented in docs/api.md):

- ``stuck``: a ``running`` task not updated for ``STUCK_RUNNING_SECONDS`` (a runner
  heartbeats every third of its lease, so it has stopped reporting), or a waiting task
  that could be claimed for ``STUCK_PENDING_SECONDS`` (no runner takes it); a scheduled
  task is not stuck.
- ``repeated_failures``: a task type whose last ``REPEATED_FAILURES`` or more finished
  tasks all failed.
- ``low_success_rate``: over the last day, at least ``LOW_RATE_MIN_TASKS`` finished tasks
  and a success rate under ``LOW_RATE``.
- ``flags``: one line of text per problem found, for people.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any

from app.clock import parse_iso
from app.models.agent import TASK_TYPES
from app.models.metrics import FINAL_STATUSES
from app.services.metrics_service import MetricsService
from app.services.task_service import TaskService
from app.storage.stores import Task

STUCK_RUNNING_SECONDS = 15 * 60
STUCK_PENDING_SECONDS = 60 * 60
REPEATED_FAILURES = 3
LOW_RATE, LOW_RATE_MIN_TASKS, LOW_RATE_WINDOW_DAYS = 0.8, 5, 1
LIVE_TAIL_LINES = 20
RECENT_COMPLETED = 10
PENDING_SHOWN = 100
"""The waiting tasks listed, and the scheduled ones; ``queue`` has how many there are."""
ATTENTION_STATUSES = ("needs_decision", "failed")
"""A ``failed`` task is one that will not run again: a failure retried sends the task
back to ``pending``. ``cancelled`` tasks never need a person."""


def _age_seconds(stamp: str, now: datetime) -> float:
    return max((now - parse_iso(stamp)).total_seconds(), 0.0)


def _seconds_until(stamp: str, now: datetime) -> float:
    return max((parse_iso(stamp) - now).total_seconds(), 0.0)


def _claimable_since(task: Task) -> str:
    """When a due pending task could first be claimed: its creation, or its
    ``run_after`` if that came later (a task retried, or created to run later)."""
    if task["run_after"] is None:
        return task["created_at"]
    return max(task["created_at"], task["run_after"], key=parse_iso)


def _is_scheduled(task: Task, now: datetime) -> bool:
    """Whether the pending task's ``run_after`` has not come: no claim takes it yet."""
    return task["run_after"] is not None and parse_iso(task["run_after"]) > now


def counts(tasks: TaskService) -> dict[str, Any]:
    by_status = tasks.counts_by_status()
    return {"total": sum(by_status.values()), "by_status": by_status}


def running_stale_seconds(tasks: TaskService) -> float:
    """Seconds since the running task updated least recently was last updated (every
    heartbeat updates it); 0 when no task runs."""
    oldest, _ = tasks.find(("running",), by="updated_at", newest_first=False, limit=1)
    return _age_seconds(oldest[0]["updated_at"], tasks.clock()) if oldest else 0.0


def attention(tasks: TaskService, limit: int) -> dict[str, Any]:
    """Tasks that need a person, newest (by ``updated_at``) first: those that wait for a
    decision, and those that failed after their last attempt (``failed`` is final)."""
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


def _split_pending(tasks: TaskService, now: datetime) -> tuple[list[Task], list[Task]]:
    """Every pending task, as (waiting, scheduled): the waiting in claim order (the
    highest priority, then the oldest), the scheduled by ``run_after``, the soonest first.
    The store gives them oldest first, and a stable sort keeps that order within a
    priority or a ``run_after``."""
    pending, _ = tasks.find(("pending",), newest_first=False)
    waiting = [task for task in pending if not _is_scheduled(task, now)]
    scheduled = [task for task in pending if _is_scheduled(task, now)]
    return (sorted(waiting, key=lambda task: -task["priority"]),
            sorted(scheduled, key=lambda task: parse_iso(task["run_after"])))


def _older_than(tasks: list[Task], since: Callable[[Task], str], limit: float,
                now: datetime) -> list[Task]:
    """The tasks whose time ``since`` is at least ``limit`` seconds ago, each with its
    ``age_seconds``."""
    aged = ({**task, "age_seconds": _age_seconds(since(task), now)} for task in tasks)
    return [task for task in aged if task["age_seconds"] >= limit]


def _stuck(running: list[Task], waiting: list[Task], now: datetime) -> list[Task]:
    """Running tasks not updated for ``STUCK_RUNNING_SECONDS``, then the waiting tasks
    that could be claimed for ``STUCK_PENDING_SECONDS``, those waiting longest first (at
    most ``PENDING_SHOWN`` of them)."""
    stuck_waiting = sorted(_older_than(waiting, _claimable_since, STUCK_PENDING_SECONDS, now),
                           key=lambda task: -task["age_seconds"])
    return (_older_than(running, itemgetter("updated_at"), STUCK_RUNNING_SECONDS, now)
            + stuck_waiting[:PENDING_SHOWN])


def _queue(tasks: TaskService, waiting: int, scheduled: int) -> dict[str, int]:
    """How many tasks wait, are scheduled, run, need a decision, or were cancelled."""
    by_status = tasks.counts_by_status()
    return {"waiting": waiting, "scheduled": scheduled, "running": by_status["running"],
            "needs_decision": by_status["needs_decision"],
            "cancelled": by_status["cancelled"]}


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
    """Every running task, the first waiting and scheduled ones, how many tasks are in
    each part of the queue, the last completed, and what needs attention."""
    now = tasks.clock()
    running = sorted(tasks.find(("running",))[0],
                     key=lambda task: (task.get("started_at") or task["created_at"], task["id"]))
    waiting, scheduled = _split_pending(tasks, now)
    stuck = _stuck(running, waiting, now)
    repeated = _repeated_failures(tasks)
    low_rate = _low_success_rate(metrics)
    completed, _ = tasks.find(("completed",), by="updated_at", limit=RECENT_COMPLETED)
    return {
        "running": [{**task, "live_tail": tasks.log_tail(task["id"], LIVE_TAIL_LINES)}
                    for task in running],
        "waiting": [{**task, "wait_seconds": _age_seconds(_claimable_since(task), now)}
                    for task in waiting[:PENDING_SHOWN]],
        "scheduled": [{**task, "starts_in_seconds": _seconds_until(task["run_after"], now)}
                      for task in scheduled[:PENDING_SHOWN]],
        "queue": _queue(tasks, len(waiting), len(scheduled)),
        "recent_completed": completed,
        "attention": {"stuck": stuck, "repeated_failures": repeated,
                      "low_success_rate": low_rate, "flags": _flags(stuck, repeated, low_rate)},
    }
