"""The connection to the database that holds the stores.

One :class:`PostgresDatabase` per process holds a connection pool, opened on first use,
so a gunicorn master that reads the stores before it forks hands no connection to its
workers: each worker opens its own pool. Every error of the database or of reaching it
becomes :class:`~app.storage.stores.StoreUnavailable` (a 503), and the pool checks a
connection before lending it, so service resumes by itself once the database is back.
Every wait on it is bounded (:mod:`.timeouts`, :mod:`.watchdog`), and health checks, as
requests while it is down, ask :mod:`.probe` instead of waiting for the pool.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool

from app.storage.postgres import schema
from app.storage.postgres.failures import timed_out_in_server, unavailable_on_error
from app.storage.postgres.probe import Probe
from app.storage.postgres.timeouts import Timeouts
from app.storage.stores import StoreUnavailable
from app.storage.postgres.watchdog import WATCHDOG, Watch, WatchedConnection

log = logging.getLogger(__name__)

ANSWER_WAIT_SECONDS = 0.4
"""How long a health check, or a request while the database is down, waits for the
probe's answer before taking it for none (a health check asks once per store, and
answers within a second)."""


def redacted(url: str) -> str:
    """The URL without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, "", ""))


def only_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, say)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row


class PostgresDatabase:
    def __init__(self, url: str, *, pool_size: int = 8, timeouts: Timeouts | None = None) -> None:
        """``timeouts`` default to the ``AGENT_DATABASE_*_TIMEOUT`` settings of the
        environment."""
        self.url = url
        self.location = redacted(url)
        self.pool_size = pool_size
        self.timeouts = timeouts or Timeouts.from_settings()
        self._pool: psycopg_pool.ConnectionPool[WatchedConnection] | None = None
        self._pool_pid = 0
        self._guard = threading.Lock()
        self._schema_checked = False
        self._probe = Probe(self._open, on_silent=self._silent)
        self._down = False
        """Set when the database could not be reached or did not answer: requests then
        ask the probe first, so that while it is down they fail at once instead of each
        waiting for the pool."""

    def _open(self, watch: Watch) -> WatchedConnection:
        conn = WatchedConnection.connect(self.url, connect_timeout=self.timeouts.connect)
        conn.watch = watch
        return conn

    def _limit(self, conn: WatchedConnection) -> None:
        """Have the server end statements and lock waits that last too long."""
        conn.execute("SELECT set_config('statement_timeout', %s, false), "
                     "set_config('lock_timeout', %s, false)",
                     (f"{self.timeouts.statement}s", f"{self.timeouts.lock}s"))
        conn.commit()

    def _connect(self) -> WatchedConnection:
        """Waits on a connection of its own are cut only if the server stops answering
        (a schema upgrade, say, may take long)."""
        conn = self._open(Watch(None, on_long=self._probe.ask))
        try:
            self._limit(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def connect(self) -> psycopg.Connection:
        """A connection of its own, outside the pool (for the gunicorn master, commands)."""
        with unavailable_on_error(self.location):
            return self._connect()

    def _configure(self, conn: WatchedConnection) -> None:
        """Each pooled connection: the server's limits, and a wait of the client for the
        server that outlasts the statement timeout is cut."""
        conn.watch = Watch(self.timeouts.answer, on_long=self._probe.ask)
        self._limit(conn)

    def _pool_of_this_process(self) -> psycopg_pool.ConnectionPool[WatchedConnection]:
        with self._guard:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = psycopg_pool.ConnectionPool(
                    self.url, connection_class=WatchedConnection, configure=self._configure,
                    min_size=1, max_size=self.pool_size, open=False,
                    timeout=self.timeouts.pool,
                    check=psycopg_pool.ConnectionPool.check_connection,
                    kwargs={"connect_timeout": self.timeouts.connect},
                    name="agent-stores",
                )
                self._pool.open(wait=False)
                self._pool_pid = os.getpid()
            return self._pool

    def _silent(self) -> None:
        """The server did not answer the probe: every wait for it is cut at once."""
        self._down = True
        WATCHDOG.cut_all(self._probe.ask, "the database stopped answering")

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, in a transaction committed when the block ends (rolled
        back if it raises)."""
        with unavailable_on_error(self.location):
            if self._down:
                problem = self._probe.problem(ANSWER_WAIT_SECONDS)
                if problem is not None:
                    raise StoreUnavailable(f"database {self.location} unavailable: {problem}")
                self._down = False
            try:
                self._ensure_schema()
                with self._pool_of_this_process().connection() as conn:
                    yield conn
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                self._down = self._down or not timed_out_in_server(exc)
                raise

    def ensure_schema(self) -> None:
        """Create or upgrade the schema once per process (see :mod:`.schema`)."""
        with unavailable_on_error(self.location):
            self._ensure_schema()

    def _ensure_schema(self) -> None:
        if self._schema_checked:
            return
        with self._connect() as conn:
            if schema.version(conn) != schema.LATEST:
                before, after = schema.upgrade(conn)
                log.info("database schema upgraded from version %d to %d", before, after)
        self._schema_checked = True

    def close(self) -> None:
        """Close this process's pool and probe connection (the next use opens new ones)."""
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()
        self._probe.close()

    def writable(self) -> bool:
        """Whether the database answers, known within :data:`ANSWER_WAIT_SECONDS`
        whatever it does: False when it cannot tell."""
        return self._probe.problem(ANSWER_WAIT_SECONDS) is None
