"""Bounds on waiting for a database server that does not answer.

The server's ``statement_timeout`` and ``lock_timeout`` end a statement that runs or
waits too long, but a server that stops answering altogether (a stopped or hung
process, a lost network) ends nothing, and the kernel keeps acknowledging what is sent
to it, so neither TCP keepalives nor ``tcp_user_timeout`` notice. Only the client can
tell, by the clock: every wait of a :class:`WatchedConnection` for the server is
registered with the process's :data:`WATCHDOG`, whose one thread shuts the socket of a
wait that outlives its bound. psycopg then reads the end of the connection and raises,
and :class:`NoAnswer` says why. A wait that merely lasts long is reported once to its
``on_long`` callback, which may ask whether the server still answers at all.
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.rows import TupleRow

RV = TypeVar("RV")
LONG_WAIT_SECONDS = 1.0
"""A wait this long is reported to its ``on_long`` callback."""


class NoAnswer(psycopg.OperationalError):
    """The connection was cut: the server did not answer in time."""


@dataclass(frozen=True)
class Watch:
    """How a connection's waits are watched: cut after ``bound`` seconds (never when
    None), ``on_long`` called once a wait has lasted :data:`LONG_WAIT_SECONDS`."""

    bound: float | None
    on_long: Callable[[], object] | None = None


@dataclass(eq=False)
class _Wait:
    conn: psycopg.Connection[Any]
    watch: Watch
    started: float = field(default_factory=monotonic)
    cut_because: str | None = None
    reported: bool = False

    def next_time(self) -> float | None:
        """When the watchdog next has something to do about this wait."""
        times = [] if self.watch.bound is None else [self.started + self.watch.bound]
        if self.watch.on_long is not None and not self.reported:
            times.append(self.started + LONG_WAIT_SECONDS)
        return min(times, default=None) if self.cut_because is None else None


def _shut(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket (not close it: psycopg owns the descriptor), which
    wakes the thread waiting on it."""
    try:
        sock = socket.socket(fileno=conn.pgconn.socket)
    except (OSError, psycopg.OperationalError):
        return  # closed already
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


class Watchdog:
    """One thread per process, started on first use (so after gunicorn forks too)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waits: set[_Wait] = set()
        self._pid = 0

    @contextmanager
    def watching(self, conn: psycopg.Connection[Any], watch: Watch) -> Iterator[None]:
        wait = _Wait(conn, watch)
        with self._changed:
            if self._pid != os.getpid():
                self._waits = set()
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="database-watchdog", daemon=True).start()
            self._waits.add(wait)
            self._changed.notify()
        try:
            yield
        except psycopg.OperationalError as exc:
            if wait.cut_because is not None:
                raise NoAnswer(wait.cut_because) from exc
            raise
        finally:
            with self._changed:
                self._waits.discard(wait)

    def cut_all(self, on_long: Callable[[], object], reason: str) -> None:
        """Cut every connection waiting now whose watch reports to ``on_long`` (those of
        one database, whose server was found to answer no more)."""
        with self._changed:
            for wait in self._waits:
                if wait.watch.on_long == on_long:
                    self._cut(wait, reason)

    @staticmethod
    def _cut(wait: _Wait, reason: str) -> None:
        if wait.cut_because is None:
            wait.cut_because = reason
            _shut(wait.conn)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = monotonic()
                long_waits = [wait for wait in self._waits if wait.cut_because is None
                              and wait.watch.on_long is not None and not wait.reported
                              and now >= wait.started + LONG_WAIT_SECONDS]
                for wait in self._waits:
                    bound = wait.watch.bound
                    if bound is not None and now >= wait.started + bound:
                        self._cut(wait, f"no answer within {bound:g} s")
                for wait in long_waits:
                    wait.reported = True
                if not long_waits:
                    due = min((time for time in map(_Wait.next_time, self._waits)
                               if time is not None), default=None)
                    self._changed.wait(None if due is None else max(0.0, due - now))
            for wait in long_waits:
                if wait.watch.on_long is not None:
                    wait.watch.on_long()


WATCHDOG = Watchdog()


class WatchedConnection(psycopg.Connection[TupleRow]):
    """A connection whose waits for the server the watchdog bounds, once
    :attr:`watch` is set (before that it waits as any connection does)."""

    watch: Watch | None = None

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        """Every wait of psycopg for the server of an open connection (statements, their
        results, commits, rollbacks) passes here."""
        if self.watch is None:
            return super().wait(gen, *args, **kwargs)
        with WATCHDOG.watching(self, self.watch):
            return super().wait(gen, *args, **kwargs)
