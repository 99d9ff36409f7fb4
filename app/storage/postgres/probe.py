"""Whether the database answers, asked on a connection of its own.

Health checks and requests made while the database is known to be down ask here, never
the shared pool, whose connections may all be held by requests that wait. One question
is in flight at a time, in a thread of its own: a caller waits for its answer only until
a short time after it was asked, so when the server hangs, those who come later learn at
once that there is no answer yet, and no caller ever waits for a connect timeout.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

import psycopg

from app.storage.postgres.failures import describe, silent
from app.storage.postgres.watchdog import Watch, WatchedConnection

ANSWER_SECONDS = 3.0
"""A server that does not answer ``SELECT 1`` within this long is taken for silent, and
every wait on it is cut: long enough that a server only slow for a moment (a checkpoint,
a loaded machine) is not taken for a dead one."""


@dataclass(eq=False)
class _Question:
    asked: float = field(default_factory=monotonic)
    answered: threading.Event = field(default_factory=threading.Event)
    problem: str | None = None


class Probe:
    def __init__(self, connect: Callable[[Watch], WatchedConnection],
                 on_silent: Callable[[], None]) -> None:
        """``connect(watch)`` opens the probe's connection; ``on_silent()`` is called when
        the server does not answer in time (not when it refuses)."""
        self._connect = connect
        self._on_silent = on_silent
        self._guard = threading.Lock()
        self._pid = 0
        self._conn: WatchedConnection | None = None
        self._question: _Question | None = None

    def problem(self, within: float) -> str | None:
        """None when the database answered; else why not, after at most ``within``
        seconds from when the question in flight was asked."""
        question = self.ask()
        if question.answered.wait(max(0.0, question.asked + within - monotonic())):
            return question.problem
        return f"no answer within {within:g} s"

    def ask(self) -> _Question:
        """The question in flight, or a new one."""
        with self._guard:
            if self._pid != os.getpid():
                self._pid, self._conn, self._question = os.getpid(), None, None
            if self._question is None or self._question.answered.is_set():
                self._question = _Question()
                threading.Thread(target=self._answer, args=(self._question,),
                                 name="database-probe", daemon=True).start()
            return self._question

    def _answer(self, question: _Question) -> None:
        """Only the thread of the question in flight uses the probe's connection. One
        kept from an earlier question may have outlived its server (restarted since):
        then a new one is asked once more."""
        try:
            kept = self._conn is not None
            try:
                self._select()
            except psycopg.OperationalError as exc:
                if not kept or silent(exc):
                    raise
                self._select()
        except psycopg.Error as exc:
            question.problem = describe(exc)
            if silent(exc):
                self._on_silent()
        finally:
            question.answered.set()

    def close(self) -> None:
        """Close this process's probe connection (the next question opens another)."""
        with self._guard:
            conn = self._conn if self._pid == os.getpid() else None
            self._conn = None
        if conn is not None:
            conn.close()

    def _select(self) -> None:
        """One ``SELECT 1`` on the kept connection (a new one if none is kept). The
        connection is held in a local: :meth:`close` may let go of it meanwhile."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect(Watch(ANSWER_SECONDS))
            conn.autocommit = True
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            if self._conn is conn:
                self._conn = None
            conn.close()
            raise
