"""What the database's errors mean for a request: each one of reaching or using it is
:class:`~app.storage.stores.StoreUnavailable` (a 503), and some say more about the
server (it answered, it is silent)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool
from psycopg import errors

from app.storage.postgres.watchdog import NoAnswer
from app.storage.stores import StoreUnavailable


def describe(exc: BaseException) -> str:
    """The first line of the error's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def timed_out_in_server(exc: BaseException) -> bool:
    """The server ended the statement itself (``statement_timeout``, ``lock_timeout``):
    it answers, and the connection is still good."""
    return isinstance(exc, (errors.QueryCanceled, errors.LockNotAvailable))


def silent(exc: BaseException) -> bool:
    """The server did not answer in time: it may be stopped or hung, not just down."""
    return isinstance(exc, (NoAnswer, errors.ConnectionTimeout))


@contextmanager
def unavailable_on_error(location: str) -> Iterator[None]:
    """Turn a failure to reach or use the database, or a timeout, into StoreUnavailable;
    the message names the database without its password."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        raise StoreUnavailable(f"database {location} unavailable: {describe(exc)}") from exc
