"""Concurrency caps: how many tasks of a model, or of a tier, may run at once.

The routing file's ``limits`` cap the tasks ``running`` under a live lease, counted
across every server and worker: per model, and per tier (all the models the routes of
that tier name, counted together). A claim passes over a task whose model, or one of
whose tiers, has reached its cap, and takes the next one instead.

Counting and claiming happen under the store's locks of the task's caps
(:meth:`~app.storage.stores.TaskTransaction.lock`), so two claims never both take the
last place, while claims of other models go on. A claim holds the locks it takes until
it ends, so it waits only for its first: were it to wait for the keys of a later task
while holding the first's, two claims could each hold a key the other waits for. A later
task whose keys another claim holds is passed over (that claim is counting them).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.services.routing import Routing
from app.storage.stores import Task, TaskTransaction


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` tasks of ``models`` run at once; ``key`` is its lock's."""

    key: str
    models: frozenset[str]
    limit: int


def caps_of(routing: Routing, model: str) -> list[Cap]:
    """The caps a task of ``model`` counts against: its model's, and its tiers'."""
    limits = routing.limits
    caps = [Cap(f"model:{model}", frozenset({model}), limits.models[model])
            ] if model in limits.models else []
    return caps + [Cap(f"tier:{tier}", routing.tier_models(tier), limits.tiers[tier])
                   for tier in sorted(routing.tiers_of(model)) if tier in limits.tiers]


class CapCheck:
    """The cap checks of one claim, in its store transaction."""

    def __init__(self, routing: Routing, tx: TaskTransaction, now: datetime) -> None:
        self.routing = routing
        self.tx = tx
        self.now = now
        self._holding = False

    def full(self, model: str) -> frozenset[str]:
        """The models a claim must pass over because a cap of ``model`` is reached (or
        is being counted by another claim): the models of each such cap; empty when a
        task of ``model`` may be claimed."""
        caps = caps_of(self.routing, model)
        if not caps:
            return frozenset()
        locked = self.tx.lock([cap.key for cap in caps], wait=not self._holding)
        self._holding = True
        return frozenset().union(*(cap.models for cap in caps
                                   if not locked or self._reached(cap)))

    def _reached(self, cap: Cap) -> bool:
        return self.tx.running_count(sorted(cap.models), self.now) >= cap.limit


def next_claimable(
    tx: TaskTransaction, routing: Routing, task_types: list[str] | None, now: datetime
) -> Task | None:
    """The pending task a claim takes: the next one (highest priority, then oldest; not
    before its ``run_after``) whose caps leave room; None if there is none."""
    caps = CapCheck(routing, tx, now)
    excluded: frozenset[str] = frozenset()
    while (task := tx.next_pending(task_types, now, excluded)) is not None:
        full = caps.full(task["model"])
        if not full:
            return task
        excluded |= full
    return None
