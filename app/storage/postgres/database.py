"""The connection to the database that holds the stores.

One :class:`PostgresDatabase` per process holds a connection pool, opened on first use,
so a gunicorn master that reads the stores before it forks hands no connection to its
workers: each worker opens its own pool. Every error of the database or of reaching it
becomes :class:`~app.storage.stores.StoreUnavailable` (a 503), and the pool checks a
connection before lending it, so service resumes by itself once the database is back.
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

from app.storage.stores import StoreUnavailable
from app.storage.postgres import schema

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
POOL_WAIT_SECONDS = 5


def redacted(url: str) -> str:
    """The URL without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, "", ""))


@contextmanager
def unavailable_on_error(location: str) -> Iterator[None]:
    """Turn a failure to reach or use the database into StoreUnavailable; the message
    names the database without its password."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"database {location} unavailable: {reason}") from exc


def only_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, say)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row


class PostgresDatabase:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.location = redacted(url)
        self.pool_size = pool_size
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._pool_pid = 0
        self._guard = threading.Lock()
        self._schema_checked = False
        self._down = False
        """Set when the database could not be reached: the next request first tries a
        connection of its own, so that while it is down requests fail at once instead of
        each waiting for the pool."""

    def connect(self) -> psycopg.Connection:
        """A connection of its own, outside the pool (for the gunicorn master, commands)."""
        with unavailable_on_error(self.location):
            return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS)

    def _pool_of_this_process(self) -> psycopg_pool.ConnectionPool:
        with self._guard:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = psycopg_pool.ConnectionPool(
                    self.url, min_size=1, max_size=self.pool_size, open=False,
                    timeout=POOL_WAIT_SECONDS, check=psycopg_pool.ConnectionPool.check_connection,
                    kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
                    name="agent-stores",
                )
                self._pool.open(wait=False)
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, in a transaction committed when the block ends (rolled
        back if it raises)."""
        with unavailable_on_error(self.location):
            self.ensure_schema()
            if self._down:
                self.connect().close()
                self._down = False
            try:
                with self._pool_of_this_process().connection() as conn:
                    yield conn
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
                self._down = True
                raise

    def ensure_schema(self) -> None:
        """Create or upgrade the schema once per process (see :mod:`.schema`)."""
        if self._schema_checked:
            return
        with unavailable_on_error(self.location), self.connect() as conn:
            if schema.version(conn) != schema.LATEST:
                before, after = schema.upgrade(conn)
                log.info("database schema upgraded from version %d to %d", before, after)
        self._schema_checked = True

    def close(self) -> None:
        """Close this process's pool (the next use opens a new one)."""
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    def writable(self) -> bool:
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
        except StoreUnavailable:
            return False
        return True
