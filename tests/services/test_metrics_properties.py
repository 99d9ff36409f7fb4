"""The incremental aggregates always equal a computation from scratch.

Random sequences of appends (through record_task and by hand, in order and out of it),
torn and corrupt lines, truncation, replacement, and a clock that moves; after each
step the long-lived service, and at the end a newly started one, must agree exactly with
:mod:`tests.support.reference` reading the same bytes.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.clock import isoformat
from app.services.metrics_service import MetricsService
from tests.support import reference
from tests.support import FakeClock, jsonl_metrics

TASK_IDS = st.sampled_from([f"t{n}" for n in range(12)])
DURATIONS = st.one_of(
    st.sampled_from([0, 1, 1.5, 30, 60]),
    st.integers(0, 7200),
    st.floats(0, 7200, allow_nan=False).map(lambda x: round(x, 3)),
)
INVALID = st.sampled_from([-1, -0.5, True, False, "5", [1], {}])
"""Values of the wrong type or range: a record holding one is as if it lacked the field."""
TOKEN_COUNTS = st.one_of(st.sampled_from([0, 1, 2 ** 53]), st.integers(0, 10 ** 7), INVALID,
                         st.sampled_from([1.0, 2 ** 53 + 1]))
COSTS = st.one_of(
    st.sampled_from([0, 0.0, 1, 0.1, 0.0123, 1e9]),
    st.floats(0, 5, allow_nan=False).map(lambda x: round(x, 6)),
    st.floats(0, 1e-6, allow_nan=False), INVALID, st.just(1e9 + 1))
WAITS = st.one_of(st.sampled_from([0, 1, 2.5]), st.floats(0, 7200, allow_nan=False).map(
    lambda x: round(x, 6)), INVALID, st.just(1e8 + 1))
LABELS = st.one_of(st.sampled_from(["v1", "v2", "terse", "x" * 200]), st.sampled_from(
    ["", "x" * 201, 7, None, True]))
RECORD = st.fixed_dictionaries({
    "task_id": TASK_IDS,
    "task_type": st.sampled_from(["spec", "test", "impl", "review", "heal"]),
    "model": st.sampled_from(["a/1", "b/2", "c/3"]),
    "duration_seconds": DURATIONS,
    "status": st.sampled_from(["completed", "failed"]),
}, optional={
    "attempts": st.one_of(st.integers(1, 5), INVALID, st.just(0)),
    "wait_seconds": WAITS,
    **{name: TOKEN_COUNTS for name in reference.TOKENS},
    "cost_usd": COSTS,
    **{name: LABELS for name in reference.LABELS},
})
"""A record, sometimes with optional fields, some of them invalid (a few made invalid
only by their range: one past the largest tokens, cost and wait a record may hold)."""
SEED_FIELDS = ("task_id", "task_type", "model", "duration_seconds", "status")
AGE = st.one_of(  # seconds before the clock; negative: in the future
    st.integers(-2 * 86400, 40 * 86400), st.sampled_from([0, 3600, 7 * 86400]))
STAMP_FORMS = st.sampled_from(["canonical", "z", "naive", "seconds"])

OPERATIONS = st.one_of(
    st.tuples(st.just("record"), RECORD),
    st.tuples(st.just("hand"), RECORD, AGE, STAMP_FORMS, st.booleans()),
    st.tuples(st.just("corrupt"), st.sampled_from([b"garbage", b"[1, 2]", b'{"task_id": 5}',
                                                   b'{"task_id": "t1", "status": "done"}'])),
    st.tuples(st.just("torn"), st.binary(min_size=1, max_size=30).map(
        lambda b: b.replace(b"\n", b" "))),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.sampled_from(["replace", "rewrite"]),
              st.lists(st.tuples(RECORD, AGE), max_size=8)),
    st.tuples(st.just("advance"), st.integers(1, 10 * 86400)),
    st.tuples(st.just("query"), st.sampled_from([1, 2, 7, 30, 365])),
)


def stamp(clock: FakeClock, age: int, form: str) -> str:
    moment = clock() - timedelta(seconds=age)
    text = isoformat(moment)
    return {
        "canonical": text,
        "z": text.replace("+00:00", "Z"),
        "naive": text.replace("+00:00", ""),
        "seconds": moment.replace(microsecond=0).isoformat(),
    }[form]


def hand_line(record: dict, created_at: str, spaced: bool) -> bytes:
    line = dict(record, created_at=created_at)
    return (json.dumps(line) if spaced else json.dumps(line, separators=(",", ":"))).encode()


def store_record(service: MetricsService, record: dict) -> bool:
    """Record as the service records a finished task: with its valid optional fields."""
    seed = {name: record[name] for name in SEED_FIELDS}
    return service.store.record(service.checked_record(
        **seed, optional=reference.valid_optional(record)))


def small_chunks():
    return mock.patch("app.storage.jsonl.log_reader.READ_CHUNK_BYTES", 300)


def check(service: MetricsService, path: Path, clock: FakeClock, window_days: int) -> None:
    expected = reference.aggregates(reference.records_in(path), clock(), window_days)
    assert reference.comparable(service.get_aggregates(window_days)) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=40))
def test_incremental_equals_from_scratch(operations) -> None:
    with tempfile.TemporaryDirectory() as folder, small_chunks():
        path = Path(folder) / "metrics.jsonl"
        clock = FakeClock()
        service = jsonl_metrics(path, clock)
        for operation in operations:
            kind, *args = operation
            if kind == "record":
                store_record(service, args[0])
            elif kind == "hand":
                record, age, form, spaced = args
                with open(path, "ab") as out:
                    out.write(hand_line(record, stamp(clock, age, form), spaced) + b"\n")
            elif kind in ("corrupt", "torn"):
                with open(path, "ab") as out:
                    out.write(args[0] + (b"\n" if kind == "corrupt" else b""))
            elif kind == "truncate" and path.exists():
                with open(path, "r+b") as out:
                    out.truncate(int(path.stat().st_size * args[0]))
            elif kind in ("replace", "rewrite"):
                content = b"".join(
                    hand_line(record, stamp(clock, age, "canonical"), False) + b"\n"
                    for record, age in args[0])
                if kind == "rewrite":
                    path.write_bytes(content)
                else:
                    fresh = Path(folder) / "replacement.jsonl"
                    fresh.write_bytes(content)
                    os.replace(fresh, path)
            elif kind == "advance":
                clock.advance(seconds=args[0])
            elif kind == "query":
                check(service, path, clock, args[0])
        for window_days in (1, 7, 365):
            check(service, path, clock, window_days)
            check(jsonl_metrics(path, clock), path, clock, window_days)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(RECORD, st.integers(0, 30 * 86400)), min_size=1, max_size=120),
       st.integers(0, 40), st.sampled_from([1, 7, 30]))
def test_cold_start_skims_old_chunks_and_stays_exact(records, shuffle_at, window_days) -> None:
    """Small read chunks, so a cold start skims some chunks and decodes others."""
    with tempfile.TemporaryDirectory() as folder, small_chunks():
        path = Path(folder) / "metrics.jsonl"
        clock = FakeClock()
        ordered = sorted(records, key=lambda pair: -pair[1])
        if shuffle_at < len(ordered):
            ordered.append(ordered.pop(shuffle_at))
        path.write_bytes(b"".join(
            hand_line(record, stamp(clock, age, "canonical"), False) + b"\n"
            for record, age in ordered))
        service = jsonl_metrics(path, clock)
        check(service, path, clock, window_days)
        check(service, path, clock, 30)
        check(service, path, clock, window_days)
        assert not store_record(service, ordered[0][0])
        assert store_record(service, dict(ordered[0][0], task_id="new"))
        check(service, path, clock, window_days)
