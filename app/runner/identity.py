"""The names the runner's workers claim under (``runner_id``), and what the token asks of
them.

A token of role ``run`` may only use runner ids that start with ``<token name>/``; the
service says which token it sees at ``GET /api/whoami``, asked once at start.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket

from app.runner.api import ApiError, ApiUnreachable, TaskApi

log = logging.getLogger(__name__)

RUN_ROLE = "run"
RUNNER_ROLES = (RUN_ROLE, "admin")
"""The roles whose tokens may claim tasks."""


def new_runner_id(worker: int, prefix: str = "") -> str:
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}-w{worker}"


def runner_id_prefix(api: TaskApi) -> str | None:
    """What the runner ids must start with for the token: ``<name>/`` for a token of
    role ``run``, else nothing. None when the service did not say (an older service
    has no ``/api/whoami``; or it answered an error), in one line of the log: the
    runner ids then go as they are. :class:`ApiUnreachable` is raised, and
    :class:`ApiError` for a token whose role may not claim (``read``, ``submit``)."""
    try:
        caller = api.whoami()
    except ApiUnreachable:
        raise
    except ApiError as exc:
        log.warning("%s; runner ids go unprefixed", exc)
        return None
    if caller is None:
        log.info("the API does not say who the token is (no /api/whoami); runner ids go "
                 "unprefixed")
        return None
    name, role = caller.get("name"), caller.get("role")
    if role not in RUNNER_ROLES:
        raise ApiError(f"the token {name!r} has role {role}, which may not claim tasks: a "
                       f"runner needs a token of role {RUN_ROLE}")
    if role == RUN_ROLE and isinstance(name, str) and name:
        return f"{name}/"
    return ""
