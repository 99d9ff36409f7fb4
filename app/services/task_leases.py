"""Leases: how long a runner's claim on a task holds, and what its expiry does.

A runner that claims a task holds it for ``lease_seconds``; each PATCH it sends renews
the lease (a heartbeat). A lease that has run out hands the task back: to ``pending``
for another claim, where its runner's late report is still taken until another runner
claims it; a task someone asked to cancel ends ``cancelled``.

The last attempt (the ``max_attempts``-th claim) has no other runner to wait for, and
ending it ``failed`` at once would throw away the report of a runner that was only cut
off from the service for a while: the failure and its metric record cannot be undone
when the report comes. So the first expiry of a last attempt's lease gives its runner a
grace lease, ``lease_seconds`` from when the service finds the lease out (the first
request after an outage of the service, say); the task stays ``running``, held by the
same runner, which may report or heartbeat as before. Only the expiry of the grace
lease ends the task ``failed`` with :data:`LOST_NOTE` (and its one metric record). A
heartbeat of the runner makes its lease an ordinary one again.

Nothing runs in the background: whoever next reads or writes the store applies the
expiries that are due.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.clock import isoformat, parse_iso
from app.models.agent import DEFAULT_LEASE_SECONDS, MAX_DURATION_SECONDS

__all__ = ["DEFAULT_LEASE_SECONDS", "LOST_NOTE", "attempt", "elapsed_seconds", "expiry",
           "holder", "lease", "lease_expired", "transition_lease"]
LOST_NOTE = "[lease expired: runner lost]"


def lease_expired(task: dict[str, Any], now: datetime) -> bool:
    """Whether the task is ``running`` under a lease that has run out."""
    expires = task.get("lease_expires_at")
    return task["status"] == "running" and expires is not None and parse_iso(expires) <= now


def holder(task: dict[str, Any], now: datetime) -> str | None:
    """The runner holding the task now, if any (a running task under a live lease)."""
    if task["status"] != "running" or task.get("lease_expires_at") is None:
        return None
    return None if lease_expired(task, now) else task.get("runner_id")


def lease(runner_id: str, lease_seconds: int, now: datetime, *,
          grace: bool = False) -> dict[str, Any]:
    """The fields a claim or heartbeat of ``runner_id`` sets (``grace``: the fields of
    the grace lease of a last attempt, given on the runner's behalf)."""
    return {"runner_id": runner_id, "lease_seconds": lease_seconds,
            "lease_expires_at": isoformat(now + timedelta(seconds=lease_seconds)),
            "lease_grace": grace}


def attempt(task: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The fields a new attempt (a claim, or a move to ``running``) sets: one more
    attempt, started now; the first also sets ``first_claimed_at`` (how long a task
    waited for its first claim goes in its metric record)."""
    started = isoformat(now)
    first = {} if task.get("attempts", 0) else {"first_claimed_at": started}
    return {"attempts": task.get("attempts", 0) + 1, "attempt_started_at": started, **first}


def transition_lease(
    task: dict[str, Any], status: str, runner_id: str | None, now: datetime
) -> dict[str, Any]:
    """The lease fields a move of the task to ``status`` sets: ``running`` counts an
    attempt, under a new lease of ``runner_id`` (none if a person moves it); any other
    status ends the lease."""
    if status != "running":
        return {"lease_expires_at": None}
    taken = (lease(runner_id, DEFAULT_LEASE_SECONDS, now) if runner_id
             else {"runner_id": None, "lease_expires_at": None})
    return {**taken, **attempt(task, now)}


def elapsed_seconds(task: dict[str, Any], now: datetime) -> float:
    """Seconds since the task's last attempt started (tasks stored before attempts were
    timed: since it first started; never started: since it was created), within the
    duration limits."""
    began = parse_iso(task.get("attempt_started_at") or task.get("started_at")
                      or task["created_at"])
    return min(max((now - began).total_seconds(), 0.0), MAX_DURATION_SECONDS)


def expiry(task: dict[str, Any], now: datetime, max_attempts: int) -> dict[str, Any]:
    """The change an expired lease makes: back to ``pending``; on the
    ``max_attempts``-th claim, a grace lease for the same runner, and once that ran out
    too, ``failed`` for good (with its duration, for the metric); or ``cancelled`` if
    someone asked to cancel the task."""
    change: dict[str, Any] = {"id": task["id"], "updated_at": isoformat(now),
                              "lease_expires_at": None}
    if task.get("cancel_requested"):
        change.update(status="cancelled", duration_seconds=elapsed_seconds(task, now))
    elif task.get("attempts", 0) < max_attempts:
        change.update(status="pending")
    elif not task.get("lease_grace"):
        change.update(lease(task["runner_id"], task["lease_seconds"], now, grace=True))
    else:
        output = task.get("output") or ""
        change.update(status="failed", duration_seconds=elapsed_seconds(task, now),
                      output=f"{output}\n{LOST_NOTE}" if output else LOST_NOTE)
    return change
