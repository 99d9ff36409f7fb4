"""Retries: a failed attempt that its runner says is worth retrying runs again.

A task may be claimed ``max_attempts`` times. A runner's report of ``failed`` with
``retryable`` sends the task back to ``pending`` while attempts remain (and no one asked
to cancel it), claimable again once its delay has passed: ``retry_after_seconds`` when
the report gives it, else the routing entry's backoff, ``backoff_seconds`` doubling with
each attempt up to ``backoff_max_seconds``. The attempt's output goes to the task's log
and, its end, to ``last_error``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.clock import isoformat
from app.models.agent import LAST_ERROR_CHARS
from app.services.routing import Route
from app.storage.stores import Task


@dataclass(frozen=True)
class Retry:
    """A failed report's ask to run the task again, after ``after_seconds`` (None: the
    routing's backoff)."""

    after_seconds: float | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Retry | None:
        """The retry a validated PATCH body asks for, if any."""
        return cls(body.get("retry_after_seconds")) if body.get("retryable") else None


def may_retry(task: Task, max_attempts: int) -> bool:
    """Whether a failed attempt of the task may be followed by another."""
    return task.get("attempts", 0) < max_attempts and not task.get("cancel_requested")


def backoff_seconds(route: Route, attempts: int) -> float:
    """The wait after the ``attempts``-th attempt failed: ``backoff_seconds`` doubled for
    each attempt before it, at most ``backoff_max_seconds``."""
    return min(route.backoff_seconds * 2 ** (max(attempts, 1) - 1), route.backoff_max_seconds)


def last_error(output: str) -> str:
    """What a task keeps of a failed attempt's output."""
    return output[-LAST_ERROR_CHARS:]


def retry_change(task: Task, route: Route, retry: Retry, runner_id: str,
                 output: str | None, now: datetime) -> dict[str, Any]:
    """The change that sends the task back to pending after a failed attempt of
    ``runner_id``: its lease ends, and it waits for its delay. ``retried`` names the
    attempt, so that the same report sent again changes nothing."""
    attempts = task.get("attempts", 0)
    delay = backoff_seconds(route, attempts) if retry.after_seconds is None \
        else retry.after_seconds
    change: dict[str, Any] = {
        "status": "pending", "runner_id": None, "lease_expires_at": None,
        "run_after": isoformat(now + timedelta(seconds=delay)),
        "retried": {"runner_id": runner_id, "attempt": attempts},
    }
    if output is not None:
        change["last_error"] = last_error(output)
    return change


def is_retried_by(task: Task, runner_id: str) -> bool:
    """Whether the task waits for a retry after the failed attempt ``runner_id`` reported
    last (a report of it sent again is then a repeat)."""
    return task["status"] == "pending" and task.get("retried") == {
        "runner_id": runner_id, "attempt": task.get("attempts", 0)}


def retry_note(attempts: int, max_attempts: int, run_after: str) -> str:
    """The line the task's log gets when an attempt is retried."""
    return f"\n[attempt {attempts} of {max_attempts} failed: retried after {run_after}]\n"
