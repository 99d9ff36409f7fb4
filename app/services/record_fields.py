"""The optional fields of a finished task's metric record, taken from the task.

- ``attempts``: its claims when it ended (none if it was never claimed);
- ``wait_seconds``: from its creation to its first claim (``first_claimed_at``, kept
  since this field exists: tasks claimed before have none);
- the token counts and ``cost_usd`` of the ``usage`` the report that ended it gave, and
  the ``executor`` it named;
- ``prompt_variant`` and ``skill_version`` from its context.

Without a reported cost, the cost is computed from the routing file's prices of the
task's model (see :meth:`app.services.routing.Prices.cost`). A value that is unknown, or
that a record cannot hold (a context written before contexts were checked), is left out:
never a made-up 0.
"""
from __future__ import annotations

from typing import Any

from app.clock import parse_iso
from app.models.agent import LABEL_CONTEXT_FIELDS, TOKEN_FIELDS
from app.services.routing import Prices
from app.storage.metric_records import optional_fields
from app.storage.stores import Task


def wait_seconds(task: Task) -> float | None:
    """Seconds from the task's creation to its first claim, if it was claimed since
    claims are timed."""
    first_claimed = task.get("first_claimed_at")
    if first_claimed is None:
        return None
    waited = parse_iso(first_claimed) - parse_iso(task["created_at"])
    return round(waited.total_seconds(), 6)


def record_fields(task: Task, prices: Prices | None) -> dict[str, Any]:
    """The optional fields of the task's record; ``prices``: its model's, if any."""
    usage = task.get("usage") or {}
    tokens = {kind: usage[kind] for kind in TOKEN_FIELDS if kind in usage}
    cost = usage.get("cost_usd")
    if cost is None and prices is not None:
        cost = prices.cost(tokens)
    context = task.get("context") or {}
    return optional_fields({
        "attempts": task.get("attempts"),
        "wait_seconds": wait_seconds(task),
        **tokens,
        "cost_usd": cost,
        **{name: context.get(name) for name in LABEL_CONTEXT_FIELDS},
        "executor": task.get("executor"),
    })
