"""The cold read's scan of many lines at once (``TaskRows._take_many``) leaves the same
rows as taking the lines in one by one, whatever the lines hold: times in the service's
form and in others, escaped quotes, unicode and newlines in outputs, keys in another
order, fields missing or of the wrong type."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest.mock import patch

import numpy as np
import orjson
import pytest

from app.clock import parse_iso
from app.storage.jsonl import task_rows
from app.storage.jsonl.metrics import JsonlMetricStore
from app.storage.jsonl.task_rows import FIELD_CHECKS, TaskRows
from app.storage.jsonl.task_scan import _CHECKED, times_us
from app.storage.jsonl.tasks import JsonlTaskStore
from app.storage.metric_records import to_micros

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def stamp(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def task(n: int, **fields) -> dict:
    return {"id": f"{n:032x}", "direction": f"do {n}", "task_type": "impl",
            "status": "pending", "model": "m", "context": {}, "output": None,
            "created_at": stamp(n), "updated_at": stamp(n), "started_at": None,
            "runner_id": None, "lease_expires_at": None, "attempts": 0, **fields}


def odd_lines() -> list[bytes]:
    lines = []
    for n in range(300):
        lines.append(task(n, priority=n % 3 - 1))
        lines.append({"id": f"{n:032x}", "updated_at": stamp(n + 1), "status": "running",
                      "runner_id": f"r{n % 4}", "lease_expires_at": stamp(n + 30),
                      "started_at": stamp(n + 1)})
        if n % 3:
            lines.append({"id": f"{n:032x}", "updated_at": stamp(n + 2),
                          "status": "completed", "lease_expires_at": None,
                          "output": 'say "hi"\n\\ é ☃ \u2028', "recorded": False})
        if n % 6 == 1:
            lines.append({"id": f"{n:032x}", "recorded": True})
    lines += [
        # keys in another order, times in other forms
        {"updated_at": "2026-03-01T12:00:00Z", "model": "n", "id": "z1", "status": "pending",
         "context": {"a": [1, {"b": "\""}]}, "task_type": "spec", "direction": "d",
         "created_at": "2026-03-01T14:00:00+02:00", "run_after": "2026-03-02T00:00:00"},
        # fields missing: not a whole task, then a whole one
        {"id": "z2", "status": "pending"},
        task(1000, id="z2", created_at="2026-03-01T12:00:00.000000+00:00"),
        # bad values: skipped
        {"id": "z2", "status": "bogus"}, {"id": "z2", "priority": True},
        {"id": "z2", "priority": 2**40},
        {"id": "z2", "created_at": "2026-02-30T00:00:00.000000+00:00"},
        {"id": "z2", "updated_at": "0000-01-01T00:00:00.000000+00:00"},
        {"id": "z2", "updated_at": "2026-13-01T00:00:00.000000+00:00"},
        {"id": "z2", "updated_at": "2026-01-01T24:00:00.000000+00:00"},
        {"id": "z2", "lease_expires_at": 5}, {"id": "z2", "task_type": ["impl"]},
        {"id": "z2", "model": ""}, {"id": "z2", "context": []},
        {"id": "", "status": "pending"}, {"id": 5}, {"no": "id"},
        # good changes in odd forms
        {"id": "z2", "updated_at": "2028-02-29T23:59:59.999999+00:00", "priority": -7},
        {"id": "z2", "run_after": "2026-03-01T12:00:00.5+00:00", "model": "o"},
        {"id": "z1", "status": "running", "runner_id": "r9"},  # lease only the state tells
        {"id": "z1", "lease_expires_at": "2026-03-01T13:00:00+00:00"},
        {"id": f"{4:032x}", "created_at": stamp(-5)},  # moved in claim order
        task(1001, id="é-unicode-id", status="running", runner_id="r1",
             lease_expires_at=stamp(99)),
    ]
    out = [orjson.dumps(line) for line in lines]
    out.insert(5, b'{"id": "torn')
    out.insert(9, b"not json")
    return out


def read_rows(path: Path, bulk_lines: int) -> JsonlTaskStore:
    with patch.object(task_rows, "BULK_LINES", bulk_lines):
        store = JsonlTaskStore(path, metrics=JsonlMetricStore(path.with_name("m.jsonl")),
                               fsync=False, checkpoint_bytes=None)
        store.refresh()
    return store


def same_rows(one: TaskRows, other: TaskRows) -> None:
    arrays, meta = one.saved()
    other_arrays, other_meta = other.saved()
    assert arrays.keys() == other_arrays.keys()
    for name in arrays:
        assert np.array_equal(arrays[name], other_arrays[name]), name
    assert meta["models"] == other_meta["models"]
    assert sorted(meta["leases"]) == sorted(other_meta["leases"])
    assert one.unrecorded == other.unrecorded
    assert [one.state(row) for row in range(len(one))] == [
        other.state(row) for row in range(len(other))]


@pytest.mark.parametrize("chunk_lines", [None, 7])
def test_scanned_and_one_by_one_give_the_same_rows(tmp_path: Path, chunk_lines) -> None:
    lines = odd_lines()
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one_by_one = read_rows(path, 10**9)
    with patch.object(TaskRows, "_take_each", side_effect=AssertionError("not scanned")):
        scanned = read_rows(path, 1)
    same_rows(one_by_one.rows, scanned.rows)
    assert scanned.counts() == one_by_one.counts()
    assert scanned.page(None, None, False, None) == one_by_one.page(None, None, False, None)
    if chunk_lines:  # the same lines over several reads, each scanned
        path.write_bytes(b"")
        store = read_rows(path, 1)
        for start in range(0, len(lines), chunk_lines):
            with open(path, "ab") as handle:
                handle.write(b"\n".join(lines[start:start + chunk_lines]) + b"\n")
            with patch.object(task_rows, "BULK_LINES", 1):
                store.refresh()
        same_rows(one_by_one.rows, store.rows)


def test_the_service_form_and_others_give_the_same_store(tmp_path: Path) -> None:
    """Times written as the service writes them and as other writers might."""
    canonical = [task(n, updated_at=stamp(n + 0.25)) for n in range(400)]
    other = [{**line, "updated_at": line["updated_at"].replace("+00:00", "Z"),
              "created_at": parse_iso(line["created_at"]).astimezone(
                  timezone(timedelta(hours=-3))).isoformat()} for line in canonical]
    rows = []
    for name, lines in (("a", canonical), ("b", other)):
        path = tmp_path / name / "tasks.jsonl"
        path.parent.mkdir()
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        rows.append(read_rows(path, 1).rows)
    for column in ("updated_us", "order_created", "order", "status", "pending"):
        assert np.array_equal(getattr(rows[0], column).values if column != "pending"
                              else rows[0].pending,
                              getattr(rows[1], column).values if column != "pending"
                              else rows[1].pending)


def test_times_are_read_as_parse_iso_reads_them() -> None:
    values = [stamp(0), stamp(86400 * 400 + 0.000001), "1970-01-01T00:00:00.000000+00:00",
              "0001-01-01T00:00:00.000000+00:00", "9999-12-31T23:59:59.999999+00:00",
              "2024-02-29T00:00:00.000000+00:00", "2023-02-29T00:00:00.000000+00:00",
              "2026-03-01T12:00:00.000000-00:00", "2026-03-01T12:00:00.000000+01:00",
              "2026-03-01T12:00:00+00:00", "2026-03-01 12:00:00.000000+00:00",
              "2026-03-01T12:00:60.000000+00:00", "２026-03-01T12:00:00.000000+00:00",
              "2026-03-01T12:00:00.00000a+00:00", None, 5, "", "soon"]
    ok, found = times_us(values, nullable=True)
    for value, good, micros in zip(values, ok.tolist(), found.tolist()):
        if value is None:
            assert good
            continue
        try:
            expected = to_micros(parse_iso(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            assert not good, value
        else:
            assert good and micros == expected, value


def test_the_scan_checks_the_fields_the_rows_check() -> None:
    assert set(_CHECKED) == set(FIELD_CHECKS) - {"id"}
