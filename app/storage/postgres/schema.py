"""The database schema, versioned: each migration moves it one version on.

:func:`upgrade` applies the migrations a database lacks, in one transaction, under a
transaction-level advisory lock, so servers (or ``flask db upgrade`` runs) starting at
once never race: one applies, the others wait and then find nothing left to do.
Migrations only add; none drops or rewrites what is stored.
"""
from __future__ import annotations

import psycopg

from app.storage.stores import StoreUnavailable

SCHEMA_LOCK = 0x61676E74  # any fixed number shared by every process that upgrades

MIGRATIONS: tuple[str, ...] = (
    # 1: metric records, tasks, task logs.
    """
    CREATE TABLE metric_records (
        seq bigserial PRIMARY KEY,
        task_id text NOT NULL UNIQUE,
        task_type text NOT NULL,
        model text NOT NULL,
        duration_seconds double precision NOT NULL
            CHECK (duration_seconds >= 0 AND duration_seconds <= 1e8),
        status text NOT NULL CHECK (status IN ('completed', 'failed')),
        created_at timestamptz NOT NULL,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id()
    );
    CREATE INDEX metric_records_xid ON metric_records (xid);
    CREATE INDEX metric_records_created_at ON metric_records (created_at);
    CREATE TABLE metric_compactions (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        generation bigint NOT NULL,
        carried json
    );
    INSERT INTO metric_compactions (generation, carried) VALUES (0, NULL);
    CREATE TABLE tasks (
        id text PRIMARY KEY,
        status text NOT NULL,
        task_type text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        runner_id text,
        lease_expires_at timestamptz,
        recorded boolean,
        state json NOT NULL
    );
    CREATE INDEX tasks_by_created ON tasks (created_at, id);
    CREATE INDEX tasks_by_status ON tasks (status, created_at, id);
    CREATE INDEX tasks_leased ON tasks (lease_expires_at)
        WHERE status = 'running' AND lease_expires_at IS NOT NULL;
    CREATE INDEX tasks_held ON tasks (runner_id) WHERE status = 'running';
    CREATE INDEX tasks_unrecorded ON tasks (id) WHERE recorded = false;
    CREATE TABLE task_logs (
        task_id text PRIMARY KEY,
        log text NOT NULL
    );
    """,
    # 2: the views for operators list tasks of some statuses by when they last changed.
    """
    CREATE INDEX tasks_by_status_updated ON tasks (status, updated_at, id);
    """,
    # 3: claims by priority, not before run_after, capped per model: the columns they
    # look at, filled in from the stored states (tasks stored before have priority 0).
    """
    ALTER TABLE tasks ADD COLUMN priority integer NOT NULL DEFAULT 0,
                      ADD COLUMN run_after timestamptz,
                      ADD COLUMN model text;
    UPDATE tasks SET priority = COALESCE((state->>'priority')::integer, 0),
                     run_after = (state->>'run_after')::timestamptz,
                     model = state->>'model';
    CREATE INDEX tasks_claim_order ON tasks (priority DESC, created_at, id)
        WHERE status = 'pending';
    CREATE INDEX tasks_running_models ON tasks (model) WHERE status = 'running';
    """,
    # 4: the optional fields of a metric record (null: unknown); records stored before
    # have none. Nullable columns without defaults: the table is not rewritten.
    """
    ALTER TABLE metric_records ADD COLUMN attempts integer,
                               ADD COLUMN wait_seconds double precision,
                               ADD COLUMN input_tokens bigint,
                               ADD COLUMN output_tokens bigint,
                               ADD COLUMN cache_read_input_tokens bigint,
                               ADD COLUMN cache_creation_input_tokens bigint,
                               ADD COLUMN cost_usd double precision,
                               ADD COLUMN prompt_variant text,
                               ADD COLUMN skill_version text,
                               ADD COLUMN executor text;
    """,
)
LATEST = len(MIGRATIONS)


def version(conn: psycopg.Connection) -> int:
    """The schema version of the database (0: none)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return row[0] if row else 0


def upgrade(conn: psycopg.Connection) -> tuple[int, int]:
    """Bring the schema to :data:`LATEST`; returns the versions before and after. The
    upgrade may take long on large tables, and waits for another server's: the
    statement and lock timeouts do not apply to it."""
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SET LOCAL lock_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        before = version(conn)
        if before > LATEST:
            raise StoreUnavailable(f"the database schema is version {before}, newer than "
                                   f"this release knows ({LATEST}); upgrade the service")
        for migration in MIGRATIONS[before:]:
            conn.execute(migration)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (%s)", (max(before, LATEST),))
    return before, max(before, LATEST)
