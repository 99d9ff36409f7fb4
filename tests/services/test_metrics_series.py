"""Time buckets, totals and histograms over the metric columns, against plain reference code."""
from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.metric_totals import (
    DURATION_BOUNDS_SECONDS,
    duration_histograms,
    finished_counts,
)
from app.services.metrics_series import default_bucket, service_timeseries
from app.services.metrics_service import MetricsService
from app.storage.jsonl import log_reader
from tests.support import reference
from tests.support.seed import spread_records, write_store
from tests.support import FakeClock, jsonl_metrics

pytestmark = pytest.mark.backend("jsonl")  # the JSONL metric store under the service


@pytest.fixture
def service(logs_dir: Path, clock: FakeClock) -> MetricsService:
    return jsonl_metrics(logs_dir / "metrics.jsonl", clock)


@pytest.mark.parametrize("window_days,bucket", [(1, "hour"), (7, "day"), (3, "hour"), (30, "day")])
def test_timeseries_matches_the_reference(service, clock, window_days, bucket) -> None:
    write_store(service.store.log.path, spread_records(clock(), 400, days=40))
    records = reference.records_in(service.store.log.path)
    series = service_timeseries(service, window_days, bucket)
    assert series == reference.timeseries(records, clock(), window_days, bucket)
    aggregates = service.get_aggregates(window_days)
    assert sum(p["completed"] for p in series) == aggregates["success_rate"]["completed"]
    assert sum(p["failed"] for p in series) == aggregates["success_rate"]["failed"]


def test_buckets_are_utc_aligned_and_cover_the_window(service, clock) -> None:
    clock.now = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    service.record_task("a", "impl", "m", 4, "completed")
    series = service_timeseries(service, 1, "hour")
    assert series[0]["start"] == "2026-02-28T12:00:00.000000+00:00"
    assert series[-1]["start"] == "2026-03-01T12:00:00.000000+00:00"
    assert len(series) == 25
    assert series[-1] == {"start": "2026-03-01T12:00:00.000000+00:00", "completed": 1, "failed": 0,
                          "p50_seconds": 4.0, "p95_seconds": 4.0,
                          # a record without usage: its bucket's sums are unknown, not 0
                          "cost_usd": None, "input_tokens": None, "output_tokens": None}
    assert all(p["completed"] + p["failed"] == 0 for p in series[:-1])
    days = service_timeseries(service, 7, "day")
    assert [p["start"][:10] for p in days] == [
        (datetime(2026, 2, 22) + timedelta(days=n)).date().isoformat() for n in range(8)
    ]


def test_empty_store_has_zeroed_buckets(service) -> None:
    series = service_timeseries(service, 2, "day")
    assert len(series) == 3
    assert all(p == {**p, "completed": 0, "failed": 0, "p50_seconds": 0.0, "p95_seconds": 0.0}
               for p in series)


def test_default_bucket() -> None:
    assert [default_bucket(days) for days in (1, 2, 3, 365)] == ["hour", "hour", "day", "day"]


def test_totals_and_histograms_over_the_whole_store(service, clock) -> None:
    write_store(service.store.log.path, spread_records(clock(), 300, days=400))
    records = reference.records_in(service.store.log.path)
    counts = finished_counts(service.totals())
    assert counts == reference.finished_counts(records)
    histograms = duration_histograms(service.totals())
    assert {(h.task_type, h.model) for h in histograms} == {
        (r["task_type"], r["model"]) for r in records
    }
    for histogram in histograms:
        expected = reference.histogram(records, histogram.task_type, histogram.model,
                                       list(DURATION_BOUNDS_SECONDS))
        assert histogram.cumulative_counts == list(expected["buckets"].values())
        assert histogram.sum_seconds == pytest.approx(expected["sum"], abs=1e-6)


def test_a_duration_on_a_bound_falls_in_that_bucket(service) -> None:
    service.record_task("a", "impl", "m", 60, "completed")
    service.record_task("b", "impl", "m", 60.000001, "completed")
    [histogram] = duration_histograms(service.totals())
    bounds = dict(zip((*DURATION_BOUNDS_SECONDS, "+Inf"), histogram.cumulative_counts))
    assert (bounds[30], bounds[60], bounds[120], bounds["+Inf"]) == (0, 1, 2, 2)


MOMENTS = st.integers(min_value=-10 * 86400, max_value=3600).map(
    lambda s: datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc) + timedelta(seconds=s)
)
RECORDS = st.lists(st.fixed_dictionaries({
    "task_type": st.sampled_from(["impl", "spec"]),
    "model": st.sampled_from(["a", "b"]),
    "duration_seconds": st.floats(0, 10000, allow_nan=False).map(lambda d: round(d, 6)),
    "status": st.sampled_from(["completed", "failed"]),
    "created_at": MOMENTS.map(datetime.isoformat),
}), max_size=60)


@settings(max_examples=40, deadline=None)
@given(records=RECORDS, window_days=st.integers(1, 12), bucket=st.sampled_from(["hour", "day"]))
def test_timeseries_property(records, window_days, bucket) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as folder:
        service = jsonl_metrics(Path(folder) / "metrics.jsonl", clock)
        stored = [{"task_id": f"t{n}", **record} for n, record in enumerate(records)]
        write_store(service.store.log.path, stored, noise=False)
        assert service_timeseries(service, window_days, bucket) == reference.timeseries(
            stored, clock(), window_days, bucket
        )


def test_stored_records_are_the_counted_ones_read_in_bounded_chunks(
    service, clock, monkeypatch
) -> None:
    write_store(service.store.log.path, spread_records(clock(), 2000, days=30))
    monkeypatch.setattr(log_reader, "READ_CHUNK_BYTES", 4096)
    chunk_ends = []
    poll_chunks = log_reader.LogReader.poll_chunks

    def noting_chunk_ends(reader, *args, **kwargs):
        for chunk in poll_chunks(reader, *args, **kwargs):
            chunk_ends.append(chunk.end)
            yield chunk

    monkeypatch.setattr(log_reader.LogReader, "poll_chunks", noting_chunk_ends)
    records = service.stored_records()
    first = next(records)
    assert len(chunk_ends) == 1
    assert 0 < chunk_ends[0] <= 4096 < service.store.log.path.stat().st_size
    rest = [first, *records]
    assert [r.task_id for r in rest] == [
        r["task_id"] for r in reference.records_in(service.store.log.path)
    ]
    assert len(rest) == service.get_aggregates(365)["success_rate"]["total"] == 2000


def test_records_dated_later_count_once_their_time_comes(service, clock) -> None:
    service.record_task("now", "impl", "m", 4, "completed")
    later = {"task_type": "impl", "model": "m", "duration_seconds": 9, "status": "failed"}
    with open(service.store.log.path, "a") as out:
        for task_id, moment in (("later", clock() + timedelta(hours=2)),
                                ("far", datetime(2300, 1, 1, tzinfo=timezone.utc))):
            out.write(json.dumps({"task_id": task_id, **later,
                                  "created_at": moment.isoformat()}) + "\n")
    assert service.get_aggregates(1)["success_rate"]["total"] == 1
    series = service_timeseries(service, 1, "hour")
    assert len(series) == 25 and sum(p["completed"] + p["failed"] for p in series) == 1
    clock.advance(hours=3)
    assert service.get_aggregates(1)["success_rate"] == {
        "completed": 1, "failed": 1, "total": 2, "rate": 0.5}
    assert sum(p["failed"] for p in service_timeseries(service, 1, "hour")) == 1
