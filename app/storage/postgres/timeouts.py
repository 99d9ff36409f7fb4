"""How long each wait on the database may last (the ``AGENT_DATABASE_*_TIMEOUT``
settings, see :data:`app.config.DATABASE_TIMEOUTS`)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app import config

ANSWER_MARGIN_SECONDS = 1.0
"""How much longer than the statement timeout a connection may stay silent before it is
cut: the server's own cancellation, which leaves the connection usable, comes first."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect, to get a connection from the pool, for a statement to run
    and for it to wait for a lock (the last two enforced by the server)."""

    connect: int
    pool: int
    statement: int
    lock: int

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None) -> Timeouts:
        """From the app's settings (the defaults for those they lack); from the
        environment when none are given."""
        values = (config.database_timeouts(os.environ) if settings is None
                  else {**config.database_timeouts({}), **settings})
        return cls(
            connect=values["AGENT_DATABASE_CONNECT_TIMEOUT"],
            pool=values["AGENT_DATABASE_POOL_TIMEOUT"],
            statement=values["AGENT_DATABASE_STATEMENT_TIMEOUT"],
            lock=values["AGENT_DATABASE_LOCK_TIMEOUT"],
        )

    @property
    def answer(self) -> float:
        """The longest a pooled connection waits for the server before it is cut."""
        return self.statement + ANSWER_MARGIN_SECONDS
