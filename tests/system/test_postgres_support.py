"""The real PostgreSQL the tests get: one server per session, one database per test."""
from __future__ import annotations

import psycopg
import pytest

from bench.postgres_server import PostgresServer


def test_databases_of_the_session_server_are_isolated(postgres_server: PostgresServer,
                                                      database_url: str) -> None:
    other_url = postgres_server.create_database("test_isolation_other")
    try:
        with psycopg.connect(database_url) as conn:
            conn.execute("CREATE TABLE items (name text)")
            conn.execute("INSERT INTO items VALUES ('only here')")
            assert conn.execute("SELECT current_setting('server_encoding')").fetchone() == (
                "UTF8",)
        with psycopg.connect(other_url) as conn:
            assert conn.execute("SELECT to_regclass('items')").fetchone() == (None,)
    finally:
        postgres_server.drop_database("test_isolation_other")


def test_role_with_password_needs_it(postgres_server: PostgresServer, database_url: str) -> None:
    postgres_server.create_role("test_secret_role", "p@ss:word/1")
    try:
        url = postgres_server.url("postgres", user="test_secret_role", password="p@ss:word/1")
        assert "p%40ss%3Aword%2F1@" in url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("test_secret_role",)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(postgres_server.url("postgres", user="test_secret_role"))
    finally:
        with postgres_server.admin_connection() as conn:
            conn.execute("DROP ROLE test_secret_role")


def test_restart_keeps_data_and_breaks_open_connections(postgres_server: PostgresServer,
                                                        database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as before:
        before.execute("CREATE TABLE items (name text)")
        before.execute("INSERT INTO items VALUES ('kept')")

        postgres_server.restart()

        with pytest.raises(psycopg.OperationalError):
            before.execute("SELECT 1")
    with psycopg.connect(database_url) as after:
        assert after.execute("SELECT name FROM items").fetchall() == [("kept",)]


def test_start_after_kill_recovers_committed_data(postgres_server: PostgresServer,
                                                  database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (name text)")
        conn.execute("INSERT INTO items VALUES ('committed')")

        postgres_server.kill()

        assert not postgres_server.is_running()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    postgres_server.start()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT name FROM items").fetchall() == [("committed",)]
