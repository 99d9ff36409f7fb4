"""The roles a token may have, and what each route needs: declared here, in one place.

- ``read`` may GET everything: the API's reads, ``/metrics`` and the dashboard.
- ``run`` may claim, and heartbeat or report only tasks it holds, under ``runner_id``s
  that start with ``<token name>/``; it may GET the tasks its runners hold.
- ``submit`` may create, decide, cancel, rerun and edit tasks, and read.
- ``admin`` may do everything.

A route is in :data:`ROUTE_ROLES` with the roles that may call it, or in
:data:`OPEN_ENDPOINTS` (no token needed). A route in neither is refused to all but
``admin``; the test suite walks the URL map so that no route is left undecided.
"""
from __future__ import annotations

from dataclasses import dataclass

from werkzeug.exceptions import Forbidden

READ, RUN, SUBMIT, ADMIN = "read", "run", "submit", "admin"
ROLES = (READ, RUN, SUBMIT, ADMIN)

READERS = frozenset({READ, SUBMIT, ADMIN})
RUNNERS = frozenset({RUN, ADMIN})
SUBMITTERS = frozenset({SUBMIT, ADMIN})
ANY_ROLE = frozenset(ROLES)

OPEN_ENDPOINTS = frozenset({"system.health", "system.openapi"})
"""Answered without a token (``/api/health`` says more to a reader)."""

ROUTE_ROLES: dict[str, frozenset[str]] = {
    "access.whoami": ANY_ROLE,
    "agent.metrics": READERS,
    "agent.metrics_records": READERS,
    "agent.metrics_timeseries": READERS,
    "agent.pipeline": READERS,
    "agent.route": READERS,
    "agent.list_tasks": READERS,
    "agent.count_tasks": READERS,
    "agent.tasks_needing_attention": READERS,
    "agent.task_log": READERS,
    "agent.get_task": READERS | {RUN},
    "agent.create_task": SUBMITTERS,
    "agent.cancel_task": SUBMITTERS,
    "agent.rerun_task": SUBMITTERS,
    "agent.update_task": SUBMITTERS | {RUN},
    "agent.claim_task": RUNNERS,
    "compare.metrics_compare": READERS,
    "dashboard.dashboard": READERS,
    "dashboard.compare": READERS,
    "prometheus.scrape": READERS,
    "static": READERS,
}
"""Roles allowed per endpoint. Routes open to ``run`` and others check more for ``run``
in the route: :meth:`Caller.check_person`, :meth:`Caller.check_runner` and
:meth:`Caller.check_holds`."""


def _needed(roles: frozenset[str]) -> str:
    """The roles in words, the least powerful first."""
    return " or ".join(role for role in ROLES if role in roles)


def forbidden(roles: frozenset[str], caller: Caller) -> Forbidden:
    return Forbidden(f"This needs a token of role {_needed(roles)}; the token "
                     f"{caller.name!r} has role {caller.role}.")


@dataclass(frozen=True)
class Caller:
    """The token a request came with: its name (None when no token is configured) and
    role."""

    name: str | None
    role: str

    def check(self, roles: frozenset[str]) -> None:
        """403 unless the caller's role is one of ``roles``."""
        if self.role not in roles:
            raise forbidden(roles, self)

    def _names_own_runner(self, runner_id: str | None) -> bool:
        return (runner_id or "").startswith(f"{self.name}/")

    def check_person(self) -> None:
        """A person's change of a task (a decision, or no ``runner_id``) needs ``submit``."""
        self.check(SUBMITTERS)

    def check_runner(self, runner_id: str) -> None:
        """A runner's claim or change needs ``run``; a ``run`` token acts only under
        runner ids of its own (``<name>/...``)."""
        self.check(RUNNERS)
        if self.role == RUN and not self._names_own_runner(runner_id):
            raise Forbidden(f"The token {self.name!r} may only use runner ids starting "
                            f"with '{self.name}/'.")

    @property
    def holds_only(self) -> bool:
        """Whether its runners may change only the tasks they hold (a ``run`` token's),
        not take one by any way but a claim."""
        return self.role == RUN

    def check_holds(self, runner_id: str | None) -> None:
        """A ``run`` token reads only tasks one of its runners holds (or held last)."""
        if self.role == RUN and not self._names_own_runner(runner_id):
            raise Forbidden(f"The token {self.name!r} (role run) may only read tasks its "
                            "runners hold; reading other tasks needs role read.")
