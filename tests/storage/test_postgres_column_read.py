"""The first read of the PostgreSQL metric store (:mod:`app.storage.postgres.column_read`)
gives the columns that reading the rows one by one gives (``record_batch`` and
``RecordColumns.add``), whatever the table holds."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest

from app.models.agent import MAX_COST_USD, MAX_DURATION_SECONDS, MAX_TOKENS
from app.storage.metric_columns import COLUMN_TYPES, LABEL_FIELDS, Labels, RecordColumns
from app.storage.postgres import PostgresDatabase
from app.storage.postgres.column_read import read_columns
from app.storage.postgres.metrics import RECORD_COLUMNS, PostgresMetricStore, record_batch

pytestmark = pytest.mark.backend("postgresql")
FIELDS = ("task_id", "task_type", "model", "duration_seconds", "status", "created_at",
          "attempts", "wait_seconds", "input_tokens", "output_tokens",
          "cache_read_input_tokens", "cache_creation_input_tokens", "cost_usd",
          "prompt_variant", "skill_version", "executor")
ODD_LABELS = ["a,b", 'say "hi"', "back\\slash", "new\nline", "tab\there", "ünïcødé ☃",
              "𝄞 clef", "{\"json\": 1}", "'quote'", " ", "x" * 200, "NULL", "\\N", "\r"]
ODD_NUMBERS: dict[str, list[Any]] = {
    "attempts": [None, 0, 1, -1, 2 ** 31 - 1, 7],
    "wait_seconds": [None, 0.0, -0.0, 0.5e-6, 1.5e-6, 2.5e-6, 1.0000005, MAX_DURATION_SECONDS,
                     MAX_DURATION_SECONDS * 1.0000001, -1.0, float("nan"), float("inf"),
                     123.456789],
    "tokens": [None, 0, -1, 1, MAX_TOKENS, MAX_TOKENS + 1, 2 ** 62, 123_456_789],
    "cost_usd": [None, 0.0, 0.5e-9, 1.5e-9, 1e-9, 0.123456789, MAX_COST_USD,
                 MAX_COST_USD * 1.0000001, -0.01, float("nan"), float("inf"), 2.5],
}
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def odd_rows(count: int, seed: int = 3) -> list[tuple[Any, ...]]:
    """Rows of :data:`FIELDS` with odd values: nulls, zeros, values the checks refuse,
    halves of a unit to round, many labels and labels of every odd character, times out
    of order and equal ones."""
    rng = random.Random(seed)
    types = [f"type-{n}" for n in range(300)] + ODD_LABELS + [""]
    labels = ODD_LABELS + ["", "y" * 1000, "v1", "v2"]
    rows = []
    for n in range(count):
        created = START + timedelta(microseconds=rng.choice(
            [0, 1, 999_999, rng.randrange(10 ** 12)]) * rng.choice([1, -1]))
        if n % 97 == 0:
            created = rng.choice([datetime(1, 1, 1, tzinfo=timezone.utc),
                                  datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)])
        duration = rng.choice([0.0, 0.0000005, 0.0000015, 1.0000025, 123.456789, 1e8,
                               rng.randrange(10 ** 12) / 1e6, rng.random() * 1000])
        tokens = [rng.choice(ODD_NUMBERS["tokens"]) for _ in range(4)]
        rows.append((
            f"task-{n}", rng.choice(types), rng.choice(ODD_LABELS + ["m1", "m2", ""]),
            duration, rng.choice(["completed", "failed"]), created,
            rng.choice(ODD_NUMBERS["attempts"]), rng.choice(ODD_NUMBERS["wait_seconds"]),
            *tokens, rng.choice(ODD_NUMBERS["cost_usd"]),
            *(rng.choice([None, *labels]) for _ in LABEL_FIELDS),
        ))
    return rows


def insert(url: str, rows: list[tuple[Any, ...]], transactions: int = 1) -> None:
    """Insert ``rows`` in that many transactions, one after the other."""
    with psycopg.connect(url) as conn:
        for part in range(transactions):
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO metric_records ({', '.join(FIELDS)}) "
                    f"VALUES ({', '.join(['%s'] * len(FIELDS))})", rows[part::transactions])


def read_both(url: str, horizon: int = 0) -> tuple[RecordColumns, Any, list[tuple[Any, ...]]]:
    """The columns of :func:`read_columns` (with the rows it notes from ``horizon`` on),
    and the rows of ``RECORD_COLUMNS`` by ``seq`` from the same snapshot."""
    database = PostgresDatabase(url)
    try:
        with database.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            read = read_columns(conn, horizon)
            rows = conn.execute(f"SELECT {RECORD_COLUMNS} FROM metric_records ORDER BY seq",
                                binary=True).fetchall()
    finally:
        database.close()
    return read.columns, read, rows


def label_names(columns: RecordColumns, name: str, labels: Labels) -> list[Any]:
    """The label each record holds in column ``name`` (None where UNKNOWN)."""
    return [labels.names[code] if code >= 0 else None for code in columns.column(name).tolist()]


def assert_same_columns(read: RecordColumns, expected: RecordColumns) -> None:
    assert read.size == expected.size
    assert read._data.keys() == expected._data.keys()  # the same optional columns held
    for name in COLUMN_TYPES:
        assert read.column(name).dtype == expected.column(name).dtype, name
        if name == "type_code":
            assert label_names(read, name, read.task_types) == label_names(
                expected, name, expected.task_types)
        elif name == "model_code":
            assert label_names(read, name, read.models) == label_names(
                expected, name, expected.models)
        elif name in LABEL_FIELDS:
            assert label_names(read, name, read.labels[name]) == label_names(
                expected, name, expected.labels[name]), name
        else:
            assert np.array_equal(read.column(name), expected.column(name)), name
    assert sorted(read.task_types.names) == sorted(expected.task_types.names)
    assert sorted(read.models.names) == sorted(expected.models.names)
    for name in LABEL_FIELDS:
        assert sorted(read.labels[name].names) == sorted(expected.labels[name].names), name


def expected_columns(rows: list[tuple[Any, ...]]) -> RecordColumns:
    columns = RecordColumns()
    columns.add(record_batch(rows))
    return columns


def test_odd_values_read_as_the_rows_give_them(backend: str, database_url: str) -> None:
    PostgresDatabase(database_url).ensure_schema()
    insert(database_url, odd_rows(3000), transactions=5)
    with psycopg.connect(database_url) as conn:
        xids = [xid for xid, in conn.execute(
            "SELECT DISTINCT xid::text::bigint FROM metric_records ORDER BY 1")]
    assert len(xids) == 5
    read, result, rows = read_both(database_url, horizon=xids[2])
    assert_same_columns(read, expected_columns(rows))
    assert read.generation == 0
    assert sorted(result.taken.tolist()) == [row[0] for row in rows if row[7] >= xids[2]]
    assert 0 < len(result.taken) < len(rows)
    assert {"attempts", "wait_us", "cost_nanos", "input_tokens", *LABEL_FIELDS} <= set(read._data)


def test_optional_fields_nobody_holds_validly_are_not_held(backend: str,
                                                           database_url: str) -> None:
    PostgresDatabase(database_url).ensure_schema()
    rows = [(f"t{n}", "impl", "m", 1.5, "completed", START + timedelta(seconds=n),
             0, float("nan"), -5, None, None, None, -1.0, "", None, "z" * 1000)
            for n in range(5)]
    insert(database_url, rows)
    read, _, rows = read_both(database_url)
    assert set(read._data) == {"created_us", "duration_us", "completed", "type_code",
                               "model_code"}
    assert_same_columns(read, expected_columns(rows))


def test_an_empty_table(backend: str, database_url: str) -> None:
    PostgresDatabase(database_url).ensure_schema()
    read, result, rows = read_both(database_url)
    assert rows == [] and read.size == 0 and len(result.taken) == 0
    assert_same_columns(read, expected_columns(rows))


def test_the_store_reads_the_table_then_its_tail(backend: str, database_url: str) -> None:
    """The first read takes the table, notes the rows of transactions from its horizon
    on, and the following reads add only new rows."""
    database = PostgresDatabase(database_url)
    database.ensure_schema()
    rows = odd_rows(1000, seed=5)
    insert(database_url, rows[:600])
    store = PostgresMetricStore(database)
    try:
        store.refresh()
        insert(database_url, rows[600:])
        store.refresh()
        store.refresh()
        _, _, stored = read_both(database_url)
        assert_same_columns(store.columns, expected_columns(stored))
    finally:
        store.close()
