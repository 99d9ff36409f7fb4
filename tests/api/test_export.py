"""The export written a chunk at a time, column by column, gives the same bytes as writing
each record on its own (with :mod:`csv` and ``orjson.dumps``, as the export did before),
on both backends, for records with odd values."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from app.models.agent import MAX_TOKENS
from app.services import record_export
from app.services.metrics_service import MetricsService
from app.storage.metric_records import (
    MetricRecord,
    as_stored,
    optional_values,
    quick_optional_values,
    to_micros,
)
from tests.support.stores import seed_metrics

ODD_LABELS = ["plain", "with,comma", 'with "quotes"', "two\nlines", "cr\rhere", "crlf\r\n",
              "=SUM(1)", "+1", "-2", "@at", "\ttab", "back\\slash", "ctl\x01x", "ünïcødé ✓",
              "emoji 🎉", "'quoted'", " space", "mid=dle", "a,=b"]


def odd_records() -> list[dict[str, Any]]:
    """Records with odd labels, numbers, timestamps and optional fields, some of them
    not valid (left out, or kept without their invalid optional field)."""
    stamps = ["2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00.5+00:00",
              "2026-03-01T12:30:00", "2026-03-01T12:30:00.123456+05:30",
              "2026-03-02T00:00:00Z", "1969-12-31T23:59:59.999999+00:00",
              "0001-01-01T00:00:00+14:00", "2026-02-30T00:00:00+00:00"]
    durations: list[Any] = [0, 1e-6, 12.5, 3, 0.1234567, 1e8, 0.1 + 0.2, 99999.999999, 1e-4,
                            5e-5]
    optional: list[dict[str, Any]] = [
        {},
        {"attempts": 2, "wait_seconds": 5, "input_tokens": 0, "output_tokens": MAX_TOKENS,
         "cost_usd": 0.1 + 0.2, "prompt_variant": "terse-v1"},
        {"wait_seconds": 1e-7, "cost_usd": 1e-7, "executor": "runner,a",
         "skill_version": "=1.0"},
        {"attempts": 0, "wait_seconds": -1, "executor": "", "cost_usd": "1",
         "cache_read_input_tokens": True, "prompt_variant": 'say "hi"\n'},
        {"cache_creation_input_tokens": 7, "cache_read_input_tokens": 12.0,
         "skill_version": "v\u00e9"},
        {"cost_usd": 2.5, "wait_seconds": 123456.789, "attempts": 2 ** 31},
    ]
    records = []
    for n in range(120):
        label = ODD_LABELS[n % len(ODD_LABELS)]
        records.append({
            "task_id": f"{label}-{n}" if n % 3 else label + str(n),
            "task_type": ("impl", "spec", label)[n % 3],
            "model": (label, "cursor/auto")[n % 2],
            "duration_seconds": durations[n % len(durations)],
            "status": ("completed", "failed")[n % 4 == 0],
            **optional[n % len(optional)],
            "created_at": stamps[n % len(stamps)],
        })
    records.append({**records[5], "model": "a second record of a task"})
    return records


def plain_lines(records: Iterable[MetricRecord], file_format: str) -> Iterator[bytes]:
    """The export as it was written before: a record at a time."""
    if file_format == "jsonl":
        for record in records:
            yield orjson.dumps(as_stored(record)) + b"\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=record_export.FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record_export.spreadsheet_safe(value)
                         for name, value in as_stored(record).items()})
    yield buffer.getvalue().encode()


def plain_matching(records: Iterable[MetricRecord], *, since: datetime | None = None,
                   until: datetime | None = None, task_type: str | None = None,
                   model: str | None = None, status: str | None = None
                   ) -> Iterator[MetricRecord]:
    for record in records:
        if (
            (since is None or record.created_us >= to_micros(since))
            and (until is None or record.created_us < to_micros(until))
            and (task_type is None or record.task_type == task_type)
            and (model is None or record.model == model)
            and (status is None or record.completed == (status == "completed"))
        ):
            yield record


def plain_export(metrics: MetricsService, file_format: str, **filters: Any) -> bytes:
    return b"".join(plain_lines(plain_matching(metrics.stored_records(), **filters),
                                file_format))


FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "failed"},
    {"task_type": "with,comma"},
    {"model": "cursor/auto", "status": "completed"},
    {"since": datetime(2026, 3, 1, 11, tzinfo=timezone.utc)},
    {"since": datetime(1970, 1, 1, tzinfo=timezone.utc),
     "until": datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)},
    {"model": "nobody"},
]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_the_export_is_byte_for_byte_the_plain_one(app, logs_dir, file_format,
                                                   monkeypatch) -> None:
    seed_metrics(logs_dir, odd_records())
    monkeypatch.setattr(record_export, "CHUNK_BYTES", 700)
    metrics = app.extensions["agent"].metrics
    for filters in FILTERS:
        exported = b"".join(record_export.export(metrics, file_format, **filters))
        assert exported == plain_export(metrics, file_format, **filters), filters
    # most records are exported; their odd values survive as they were
    everything = plain_export(metrics, file_format)
    assert len(everything.splitlines()) >= 90
    assert "two\nlines".encode() in everything or b"two\\nlines" in everything


def test_the_endpoint_streams_the_plain_export(app, client, logs_dir) -> None:
    seed_metrics(logs_dir, odd_records())
    metrics = app.extensions["agent"].metrics
    for file_format in ("csv", "jsonl"):
        response = client.get(f"/api/agent/metrics/records?format={file_format}"
                              "&task_type=impl&status=completed")
        assert response.data == plain_export(metrics, file_format, task_type="impl",
                                             status="completed")
    rows = list(csv.DictReader(io.StringIO(
        client.get("/api/agent/metrics/records?format=csv").text, newline="")))
    assert {row["task_type"] for row in rows} >= {"'=SUM(1)", "with,comma", "two\nlines"}


class RecordsOnly:
    """A store that gives its records one by one (no ``record_batches``)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def records(self) -> Iterator[MetricRecord]:
        return self.store.records()


@pytest.mark.backend("jsonl")
def test_a_store_without_batches_exports_the_same(app, logs_dir, monkeypatch) -> None:
    seed_metrics(logs_dir, odd_records())
    monkeypatch.setattr(record_export, "BATCH_ROWS", 7)
    metrics = app.extensions["agent"].metrics
    plain = MetricsService(RecordsOnly(metrics.store))  # type: ignore[arg-type]
    for file_format in ("csv", "jsonl"):
        assert (b"".join(record_export.export(plain, file_format, status="completed"))
                == plain_export(metrics, file_format, status="completed"))


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_a_text_cell_is_what_csv_writes(text: str) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        [record_export.spreadsheet_safe(text), "x"])
    assert buffer.getvalue() == record_export.csv_cell(text) + ",x\r\n"
    assert record_export.csv_texts([text, "plain"]) == [record_export.csv_cell(text), "plain"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12))
def test_a_text_is_what_orjson_writes(text: str) -> None:
    assert '"' + "".join(record_export.json_texts([text])) + '"' == orjson.dumps(text).decode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e8), min_size=1, max_size=5))
def test_numbers_are_written_as_orjson_and_csv_write_them(values: list[float]) -> None:
    assert record_export.json_numbers(values) == [
        orjson.dumps(value).decode() for value in values]
    assert record_export.csv_optional("cost_usd", values) == [str(value) for value in values]


OPTIONAL_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2 ** 54), st.floats(allow_nan=True),
    st.floats(0, 1e9), st.text(max_size=3), st.text(min_size=199, max_size=201),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(record_export.OPTIONAL_RECORD_FIELDS)),
                       st.lists(OPTIONAL_VALUE, min_size=3, max_size=3)))
def test_quick_optional_values_are_the_checked_ones(values: dict[str, list[Any]]) -> None:
    quick = quick_optional_values(values)
    checked = optional_values(values)
    assert list(quick) == list(checked)
    for name, column in checked.items():
        assert [repr(value) for value in quick[name]] == [repr(value) for value in column]
        assert all(value is None or not isinstance(value, float) or math.isfinite(value)
                   for value in column)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=1e300),
                          st.floats(min_value=0, max_value=1e-3)), min_size=1, max_size=6))
def test_csv_numbers_are_what_csv_writes(values: list[float | None]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([*values, "x"])
    assert ",".join(record_export.csv_numbers(values)) + ",x\r\n" == buffer.getvalue()
