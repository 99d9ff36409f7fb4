"""Reading the whole of ``metric_records`` straight into :class:`RecordColumns`.

A server's first read takes every row. Fetching them as Python tuples and building the
columns from those cost most of a server's start (3x what this read costs, measured in
bench/bench_postgres.py), most of it in Python objects the columns never keep (task ids,
one str per label, one float per amount). Here the database sends only what the columns
hold, one binary string per field for all the rows (``string_agg`` of the values' binary
forms: big-endian numbers of a fixed width, which numpy reads in place), in one row:

- the labels (task type, model and the label fields) as codes: a first query, one
  hashed scan, lists the combinations of labels the records hold (few), and each row's
  label is looked up in a JSON object of its field's codes (``jsonb ->>``: a binary
  search, however many labels there are); a label field no record holds is not read;
- that first query also counts the optional numbers each combination holds, and one no
  record holds is not read either (it stays all ``UNKNOWN``, as the columns keep it);
- every value that may be null replaced by one the field's check refuses (an attempt
  count of 0, a token count of -1, a NaN amount), so that each holds one value per row;
- ``created_at`` as PostgreSQL holds it (microseconds from 2000-01-01): exactly
  ``extract(epoch FROM created_at) * 1000000`` once shifted, at no cost;
- not the ``xid`` of each row, only the ``seq`` of those written by transactions from
  the reader's horizon on (what :class:`PostgresMetricStore` notes after a read);
- no ``ORDER BY``: the rows come in the table's order (the same for every aggregate of
  the query) and are put in ``created_at`` order here, ties in ``seq`` order, which is
  where :meth:`RecordColumns.add` puts the rows of ``ORDER BY seq``.

A binary ``COPY`` would send the same values, but psycopg hands it over row by row,
which cost more in Python than the rest of the read. The values are checked and
converted as :func:`~app.storage.metric_records.optional_values` and
:meth:`RecordColumns.add` do (a value the check refuses is ``UNKNOWN``; amounts rounded
half to even in whole units), so the columns hold what reading the rows one by one
would give. The caller runs it in the REPEATABLE READ transaction whose snapshot it
notes.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import psycopg

from app.models.agent import MAX_COST_USD, MAX_DURATION_SECONDS, MAX_TOKENS, TOKEN_FIELDS
from app.storage.metric_columns import (
    AMOUNT_SCALES,
    LABEL_FIELDS,
    UNKNOWN,
    RecordColumns,
    column_name,
)
from app.storage.metric_records import MAX_ATTEMPTS_STORED, is_record_label
from app.storage.postgres.database import only_row

PG_EPOCH_US = 946_684_800_000_000
"""Microseconds from 1970-01-01 to 2000-01-01, where PostgreSQL's timestamps count from."""
SEED_LABELS = ("task_type", "model")
"""The labels every record has, kept as ``type_code`` and ``model_code``."""
LABELS = (*SEED_LABELS, *LABEL_FIELDS)
AMOUNT_LIMITS = {"wait_seconds": MAX_DURATION_SECONDS, "cost_usd": MAX_COST_USD}


AMOUNT_NULL = "'NaN'"
WHOLE_NULL = {"attempts": "0", **{name: "-1" for name in TOKEN_FIELDS}}
"""What the optional numbers read as where null: values their checks refuse."""
OPTIONAL_NUMBERS = ("attempts", "wait_seconds", *TOKEN_FIELDS, "cost_usd")
OPTIONAL_TYPES = {"attempts": ("int4send", ">i4"), "wait_seconds": ("float8send", ">f8"),
                  **{name: ("int8send", ">i8") for name in TOKEN_FIELDS},
                  "cost_usd": ("float8send", ">f8")}


class Field(NamedTuple):
    name: str
    sql: str
    """Its value, sent in binary (a ``*send`` function); never null."""
    dtype: str
    """That binary form: a big-endian numpy type."""


SEED_FIELDS = (
    Field("seq", "int8send(seq)", ">i8"),
    Field("created", "timestamptz_send(created_at)", ">i8"),
    Field("duration_seconds", "float8send(duration_seconds)", ">f8"),
    Field("completed", "boolsend(status = 'completed')", "?"),
)


def optional_number(name: str) -> Field:
    send, dtype = OPTIONAL_TYPES[name]
    null = AMOUNT_NULL if name in AMOUNT_SCALES else WHOLE_NULL[name]
    return Field(name, f"{send}(coalesce({name}, {null}))", dtype)


def label(name: str) -> Field:
    """A label field, looked up in the JSON object of its codes (``jsonb ->>``: a binary
    search, however many labels there are)."""
    return Field(name, f"int4send(coalesce((%({name})s::jsonb ->> {name})::integer, "
                       f"{UNKNOWN}))", ">i4")


SURVEY_QUERY = (f"SELECT {', '.join(LABELS)}, "
                f"{', '.join(f'count({name})' for name in OPTIONAL_NUMBERS)} "
                f"FROM metric_records GROUP BY {', '.join(LABELS)}")
"""The combinations of labels the records hold (few: one hashed scan finds them), and
how many of each combination's records hold each optional number."""


class Survey(NamedTuple):
    labels: dict[str, list[str]]
    """Each of :data:`LABELS`: its distinct values that a record may hold (for the label
    fields, those :func:`is_record_label` accepts)."""
    numbers: list[str]
    """The optional numbers some record holds (valid or not)."""


def survey(conn: psycopg.Connection[Any]) -> Survey:
    """What :data:`SURVEY_QUERY` finds, hashing the rows: the planner takes the labels'
    combinations to be many (a hundred thousand at a million rows) and would sort the
    whole table instead, three times as slow. The transaction must be open (the setting
    ends with it; nothing after this sorts)."""
    conn.execute("SET LOCAL enable_sort = off")
    groups = conn.execute(SURVEY_QUERY).fetchall()
    columns = list(zip(*groups)) if groups else [()] * (len(LABELS) + len(OPTIONAL_NUMBERS))
    labels = {name: [value for value in dict.fromkeys(values) if value is not None
                     and (name in SEED_LABELS or is_record_label(value))]
              for name, values in zip(LABELS, columns)}
    numbers = [name for name, counts in zip(OPTIONAL_NUMBERS, columns[len(LABELS):])
               if any(counts)]
    return Survey(labels, numbers)


def fields_of(found: Survey) -> tuple[Field, ...]:
    """What is read of each row: the seed fields, the labels, and the optional fields
    some record holds (the others read as UNKNOWN without a look)."""
    return (*SEED_FIELDS, *map(label, SEED_LABELS),
            *(optional_number(name) for name in found.numbers),
            *(label(name) for name in LABEL_FIELDS if found.labels[name]))


def read_fields(conn: psycopg.Connection[Any], found: Survey, horizon: int
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every row of ``metric_records``, each of :func:`fields_of` as an array (in native
    byte order; the rows in the same order in each), each label as its index in
    ``found.labels``; and the ``seq`` of the rows written by transactions from
    ``horizon`` on."""
    fields = fields_of(found)
    query = ("SELECT count(*), string_agg(int8send(seq), ''::bytea) FILTER (WHERE xid >= "
             "%(horizon)s::text::xid8), "
             + ", ".join(f"string_agg({field.sql}, ''::bytea)" for field in fields)
             + " FROM metric_records")
    params: dict[str, Any] = {
        name: json.dumps({value: code for code, value in enumerate(values)})
        for name, values in found.labels.items() if values or name in SEED_LABELS}
    params["horizon"] = str(horizon)
    count, taken, *values = only_row(conn.execute(query, params, binary=True))
    arrays = {}
    for field, data in zip(fields, values):
        dtype = np.dtype(field.dtype)
        if len(data or b"") != count * dtype.itemsize:
            raise ValueError(f"{field.name}: {len(data or b'')} bytes for {count} rows")
        arrays[field.name] = np.frombuffer(data or b"", dtype).astype(dtype.newbyteorder("="))
    return arrays, np.frombuffer(taken or b"", ">i8").astype(np.int64)


WHOLE_CHECKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "attempts": lambda values: (values >= 1) & (values <= MAX_ATTEMPTS_STORED),
    **{name: (lambda values: (values >= 0) & (values <= MAX_TOKENS)) for name in TOKEN_FIELDS},
}
"""The checks of the whole-number optional fields (as ``OPTIONAL_CHECKS``)."""


class ColumnRead(NamedTuple):
    columns: RecordColumns
    taken: np.ndarray
    """The ``seq`` of the rows written by transactions from the horizon on."""


def created_order(created_us: np.ndarray, seqs: np.ndarray) -> np.ndarray | None:
    """The order of the rows by ``created_us`` then ``seq``; None if they are in it."""
    if len(created_us) < 2:
        return None
    step = np.diff(created_us)
    if ((step > 0) | ((step == 0) & (np.diff(seqs) > 0))).all():
        return None
    return np.lexsort((seqs, created_us))


def optional_columns(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns of the optional fields that some row holds a valid value of."""
    found: dict[str, np.ndarray] = {}
    for name, check in WHOLE_CHECKS.items():
        if name not in fields:
            continue
        values = fields[name].astype(np.int64)
        known = check(values)
        if known.any():
            found[column_name(name)] = np.where(known, values, UNKNOWN)
    for name, (column, scale) in AMOUNT_SCALES.items():
        if name not in fields:
            continue
        amounts = fields[name]
        with np.errstate(invalid="ignore"):
            known = (amounts >= 0) & (amounts <= AMOUNT_LIMITS[name])
        if known.any():
            units = np.full(len(amounts), UNKNOWN, np.int64)
            units[known] = np.round(amounts[known] * scale).astype(np.int64)
            found[column] = units
    for name in LABEL_FIELDS:
        if name in fields and (fields[name] != UNKNOWN).any():
            found[name] = fields[name]
    return found


def read_columns(conn: psycopg.Connection[Any], horizon: int) -> ColumnRead:
    """Every record of ``metric_records`` as columns, in the snapshot of ``conn``'s
    transaction (which must be REPEATABLE READ: this runs two queries), and which rows
    transactions from ``horizon`` on wrote."""
    found = survey(conn)
    fields, taken = read_fields(conn, found, horizon)
    seqs = fields["seq"]
    arrays = {
        "created_us": fields["created"] + PG_EPOCH_US,
        "duration_us": np.round(fields["duration_seconds"] * 1e6).astype(np.int64),
        "completed": fields["completed"].astype(np.int8),
        "type_code": fields["task_type"],
        "model_code": fields["model"],
        **optional_columns(fields),
    }
    del fields
    order = created_order(arrays["created_us"], seqs)
    if order is not None:
        arrays = {name: values[order] for name, values in arrays.items()}
    labels = found.labels
    columns = RecordColumns.restored(arrays, {
        "task_types": labels["task_type"], "models": labels["model"],
        "labels": {name: labels[name] for name in LABEL_FIELDS}, "generation": 0})
    return ColumnRead(columns, taken)


__all__ = ["ColumnRead", "read_columns"]
