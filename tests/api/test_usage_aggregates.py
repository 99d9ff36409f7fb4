"""The usage, queue wait and label keys of GET /api/agent/metrics and the cost and token
sums of GET /api/agent/metrics/timeseries, on both backends, for tasks made, claimed and
ended through the API (with their context's prompt_variant and skill_version, and the
usage and executor of the report that ends them), next to records of the previous
version that know none of it. Every expected value is computed here from what the test
made: costs summed as decimals, percentiles by nearest rank, a sum null when no record
in it knows its field."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.clock import isoformat
from tests.api.queue_client import claim, create, patch, routed_client
from tests.support import FakeClock
from tests.support.stores import seed_lines

RUNNER = "host/r1"
MODELS = ("model-a", "model-b")
TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
          "cache_creation_input_tokens")
LABELS = ("prompt_variant", "skill_version", "executor")
SEED_KEYS = ("success_rate", "execution_time", "window_days")


@dataclass
class Made:
    """What the test made one record of."""

    at: datetime
    task_type: str
    model: str
    completed: bool
    duration: float
    wait: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def client(tmp_path: Path, logs_dir: Path, clock: FakeClock) -> FlaskClient:
    return routed_client(tmp_path, logs_dir, clock, {"models": list(MODELS)})


def run_task(client: FlaskClient, clock: FakeClock, made: list[Made], task_type: str = "impl",
             model: str = MODELS[0], *, completed: bool = True, duration: float = 10.0,
             wait: float | None = 1.0, usage: dict[str, Any] | None = None,
             executor: str | None = None, **context: str) -> Made:
    """A task created with ``context``, claimed ``wait`` seconds later and reported by its
    runner (or, without ``wait``, ended by a person unclaimed); noted in ``made``."""
    task = create(client, task_type, context={**context, "model_override": model})
    body: dict[str, Any] = {"status": "completed" if completed else "failed",
                            "duration_seconds": duration}
    if wait is not None:
        clock.advance(seconds=wait)
        claimed = claim(client, RUNNER, task_types=[task_type])
        assert claimed is not None and claimed["id"] == task["id"]
        body["runner_id"] = RUNNER
    if usage is not None:
        body["usage"] = usage
    if executor is not None:
        body["executor"] = executor
    response = patch(client, task["id"], **body)
    assert response.status_code == 200, response.json
    record = Made(clock(), task_type, model, completed, duration, wait, dict(usage or {}),
                  {**context, **({} if executor is None else {"executor": executor})})
    made.append(record)
    return record


def old_record(task_id: str, at: datetime, task_type: str = "review", model: str = MODELS[1],
               completed: bool = True, duration: float = 3.0, **fields: Any) -> dict:
    """A record as the previous version stored it (``fields``: extra, maybe invalid)."""
    return {"task_id": task_id, "task_type": task_type, "model": model,
            "duration_seconds": duration, "status": "completed" if completed else "failed",
            "created_at": isoformat(at), **fields}


def as_made(line: dict) -> Made:
    return Made(datetime.fromisoformat(line["created_at"]), line["task_type"], line["model"],
                line["status"] == "completed", line["duration_seconds"])


# What the answers should be, from the Made records.

def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1]


def token_sum(records: list[Made], name: str) -> int | None:
    known = [r.usage[name] for r in records if name in r.usage]
    return sum(known) if known else None


def cost_decimal(records: list[Made]) -> Decimal | None:
    known = [Decimal(str(r.usage["cost_usd"])) for r in records if "cost_usd" in r.usage]
    return sum(known, Decimal(0)) if known else None


def cost_sum(records: list[Made]) -> float | None:
    total = cost_decimal(records)
    return None if total is None else float(total)


def sums(records: list[Made]) -> dict[str, Any]:
    return {"cost_usd": cost_sum(records), "input_tokens": token_sum(records, "input_tokens"),
            "output_tokens": token_sum(records, "output_tokens")}


def groups(records: list[Made], key) -> dict[str, list[Made]]:
    grouped: dict[str, list[Made]] = {}
    for record in records:
        if key(record) is not None:
            grouped.setdefault(key(record), []).append(record)
    return grouped


def outcomes(records: list[Made]) -> dict[str, Any]:
    done = sum(r.completed for r in records)
    return {"count": len(records), "completed": done, "failed": len(records) - done,
            "success_rate": round(done / len(records), 2)}


def expected(made: list[Made], now: datetime, window_days: int) -> dict[str, Any]:
    """The new keys of the aggregates over the records of the window."""
    window = [r for r in made if now - timedelta(days=window_days) <= r.at <= now]
    completed = sum(r.completed for r in window)
    cost = cost_decimal(window)
    waits = [r.wait for r in window if r.wait is not None]
    answer: dict[str, Any] = {
        "by_task_type": {name: {**outcomes(group), **sums(group)}
                         for name, group in groups(window, lambda r: r.task_type).items()},
        "by_model": {name: {"count": len(group),
                            "avg_duration": round(sum(r.duration for r in group) / len(group), 1),
                            **sums(group)}
                     for name, group in groups(window, lambda r: r.model).items()},
        "usage": {
            "tasks_with_usage": sum(bool(set(r.usage) & {*TOKENS, "cost_usd"}) for r in window),
            **{name: token_sum(window, name) for name in TOKENS},
            "cost_usd": cost_sum(window),
            "cost_per_completed_task": None if cost is None or not completed else round(
                float(cost) / completed, 9),
        },
        "queue_wait": {"p50_seconds": nearest_rank(waits, 50) if waits else None,
                       "p95_seconds": nearest_rank(waits, 95) if waits else None,
                       "count": len(waits)},
    }
    for label in LABELS:
        answer[f"by_{label}"] = {
            name: {**outcomes(group),
                   "p50_seconds": nearest_rank([r.duration for r in group], 50),
                   "avg_duration": round(sum(r.duration for r in group) / len(group), 1),
                   "cost_usd": cost_sum(group)}
            for name, group in groups(window, lambda r: r.labels.get(label)).items()}
    return answer


def aggregates(client: FlaskClient, window_days: int) -> dict[str, Any]:
    response = client.get(f"/api/agent/metrics?window_days={window_days}")
    assert response.status_code == 200, response.json
    return response.json


def check(client: FlaskClient, made: list[Made], now: datetime,
          window_days: int = 7) -> dict[str, Any]:
    """The answer's new keys are what :func:`expected` computes, and its seed keys count
    every record of the window, with usage or without."""
    answer = aggregates(client, window_days)
    want = expected(made, now, window_days)
    assert {name: answer[name] for name in want} == want
    in_window = [r for r in made if now - timedelta(days=window_days) <= r.at <= now]
    assert answer["success_rate"]["total"] == len(in_window)
    assert answer["execution_time"]["count"] == len(in_window)
    return answer


def test_usage_cost_and_labels_of_reported_tasks(client, clock: FakeClock) -> None:
    made: list[Made] = []
    run_task(client, clock, made, "impl", MODELS[0], duration=10, wait=2,
             usage={"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 50,
                    "cost_usd": 0.0123},
             executor="claude-code 1.2", prompt_variant="v1", skill_version="s1")
    run_task(client, clock, made, "impl", MODELS[1], completed=False, duration=20, wait=0.5,
             usage={"input_tokens": 5, "output_tokens": 0}, executor="host-b",
             prompt_variant="v2")
    run_task(client, clock, made, "spec", MODELS[0], duration=30, wait=7.25,
             usage={"cost_usd": 0.1}, prompt_variant="v1", skill_version="s2")
    run_task(client, clock, made, "review", MODELS[0], duration=4, wait=1)
    run_task(client, clock, made, "spec", MODELS[1], duration=6.5, wait=None,
             usage={"cache_creation_input_tokens": 12}, executor="by hand",
             prompt_variant="v1")

    answer = check(client, made, clock())
    # The same numbers written out, as a reader of the answer would add them up.
    assert answer["usage"] == {
        "tasks_with_usage": 4, "input_tokens": 1005, "output_tokens": 200,
        "cache_read_input_tokens": 50, "cache_creation_input_tokens": 12,
        "cost_usd": 0.1123, "cost_per_completed_task": 0.028075}
    assert answer["queue_wait"] == {"p50_seconds": 1.0, "p95_seconds": 7.25, "count": 4}
    assert answer["by_task_type"]["review"] == {
        "count": 1, "completed": 1, "failed": 0, "success_rate": 1.0,
        "cost_usd": None, "input_tokens": None, "output_tokens": None}
    assert answer["by_task_type"]["impl"]["output_tokens"] == 200
    assert answer["by_model"][MODELS[1]] == {
        "count": 2, "avg_duration": 13.2, "cost_usd": None, "input_tokens": 5,
        "output_tokens": 0}
    assert answer["by_prompt_variant"]["v1"] == {
        "count": 3, "completed": 3, "failed": 0, "success_rate": 1.0, "p50_seconds": 10.0,
        "avg_duration": 15.5, "cost_usd": 0.1123}
    assert answer["by_prompt_variant"]["v2"]["cost_usd"] is None
    assert set(answer["by_skill_version"]) == {"s1", "s2"}
    assert answer["by_executor"]["host-b"] == {
        "count": 1, "completed": 0, "failed": 1, "success_rate": 0.0, "p50_seconds": 20.0,
        "avg_duration": 20.0, "cost_usd": None}


def test_old_records_count_as_before_and_leave_the_sums_null(
    client, logs_dir: Path, clock: FakeClock
) -> None:
    """Records of the previous version, and records whose optional fields hold values a
    record cannot hold (ignored as if absent), count in the outcomes and durations; no
    sum, wait or label of theirs appears."""
    now = clock()
    lines = [
        old_record("old-1", now - timedelta(days=3), "review", duration=3.0),
        old_record("old-2", now - timedelta(days=2), "impl", MODELS[0], completed=False,
                   duration=8.0),
        old_record("bad-1", now - timedelta(days=1), "test", input_tokens=-5, output_tokens=True,
                   cost_usd="0.5", wait_seconds=-1, prompt_variant="", executor=7,
                   skill_version="x" * 201),
        old_record("bad-2", now - timedelta(hours=5), "test", cache_read_input_tokens=1.5,
                   cache_creation_input_tokens="3", cost_usd=False, wait_seconds=True),
    ]
    seed_lines(logs_dir, "metrics.jsonl", lines)
    made = [as_made(line) for line in lines]

    answer = check(client, made, now)
    assert answer["usage"] == {"tasks_with_usage": 0, **dict.fromkeys(TOKENS),
                               "cost_usd": None, "cost_per_completed_task": None}
    assert answer["queue_wait"] == {"p50_seconds": None, "p95_seconds": None, "count": 0}
    assert (answer["by_prompt_variant"], answer["by_skill_version"],
            answer["by_executor"]) == ({}, {}, {})
    assert answer["success_rate"] == {"completed": 3, "failed": 1, "total": 4, "rate": 0.75}
    assert answer["by_task_type"]["test"] == {
        "count": 2, "completed": 2, "failed": 0, "success_rate": 1.0,
        "cost_usd": None, "input_tokens": None, "output_tokens": None}

    # New records next to them: the sums are theirs alone, the counts are of all.
    clock.advance(minutes=1)
    run_task(client, clock, made, "impl", duration=2, wait=3, usage={"output_tokens": 9},
             prompt_variant="v1")
    run_task(client, clock, made, "review", MODELS[1], completed=False, duration=1, wait=0,
             usage={"cost_usd": 0.07})
    answer = check(client, made, clock())
    assert answer["usage"]["tasks_with_usage"] == 2
    assert (answer["usage"]["output_tokens"], answer["usage"]["input_tokens"]) == (9, None)
    # Four completed tasks in the window (three old); the cost is the failed task's.
    assert answer["usage"]["cost_per_completed_task"] == round(0.07 / 4, 9)
    assert answer["by_task_type"]["review"]["count"] == 2
    assert answer["by_task_type"]["review"]["cost_usd"] == 0.07
    assert answer["by_task_type"]["test"]["cost_usd"] is None
    assert answer["queue_wait"] == {"p50_seconds": 0.0, "p95_seconds": 3.0, "count": 2}
    assert answer["by_prompt_variant"] == {"v1": {
        "count": 1, "completed": 1, "failed": 0, "success_rate": 1.0, "p50_seconds": 2.0,
        "avg_duration": 2.0, "cost_usd": None}}


def test_sums_follow_a_moving_window_exactly(client, logs_dir: Path, clock: FakeClock) -> None:
    """As records leave the window the sums go down by exactly their amounts, and to null
    when the last record that knows a field has left; one service answers throughout."""
    start = clock()
    seed_lines(logs_dir, "metrics.jsonl", [old_record("old", start - timedelta(hours=1))])
    made = [as_made(old_record("old", start - timedelta(hours=1)))]
    first = run_task(client, clock, made, "impl", duration=5, wait=4,
                     usage={"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.5},
                     executor="e1", prompt_variant="v1")
    clock.advance(days=2)
    second = run_task(client, clock, made, "spec", MODELS[1], completed=False, duration=7,
                      wait=2, usage={"input_tokens": 7, "cost_usd": 0.25}, executor="e1",
                      prompt_variant="v1")
    clock.advance(days=2)
    run_task(client, clock, made, "review", duration=1, wait=None, prompt_variant="v2")

    for window_days in (7, 1, 3, 7):  # the same service, windows of other sizes between
        check(client, made, clock(), window_days)
    answer = check(client, made, clock())
    assert (answer["usage"]["input_tokens"], answer["usage"]["output_tokens"],
            answer["usage"]["cost_usd"]) == (107, 10, 0.75)

    clock.now = first.at + timedelta(days=7, seconds=1)  # the first report leaves
    answer = check(client, made, clock())
    assert (answer["usage"]["input_tokens"], answer["usage"]["output_tokens"],
            answer["usage"]["cost_usd"]) == (7, None, 0.25)
    assert answer["by_executor"]["e1"]["cost_usd"] == 0.25
    assert answer["queue_wait"] == {"p50_seconds": 2.0, "p95_seconds": 2.0, "count": 1}
    # The cost known is of a failed task, over the one completed task left.
    assert answer["usage"]["cost_per_completed_task"] == 0.25

    clock.now = second.at + timedelta(days=7, seconds=1)  # the last report with usage leaves
    answer = check(client, made, clock())
    assert answer["usage"] == {"tasks_with_usage": 0, **dict.fromkeys(TOKENS),
                               "cost_usd": None, "cost_per_completed_task": None}
    assert answer["queue_wait"]["count"] == 0 and answer["by_executor"] == {}
    assert set(answer["by_prompt_variant"]) == {"v2"}

    run_task(client, clock, made, "impl", duration=3, wait=1,
             usage={"input_tokens": 1, "cost_usd": 0.000000001}, executor="e2")
    answer = check(client, made, clock())
    assert (answer["usage"]["input_tokens"], answer["usage"]["cost_usd"]) == (1, 1e-9)
    # Half a nano-dollar per completed task, rounded (as Python rounds 5e-10) to one.
    assert answer["usage"]["cost_per_completed_task"] == 1e-9
    for window_days in (30, 1, 7):
        check(client, made, clock(), window_days)


def test_queue_wait_is_the_nearest_rank_of_the_known_waits(client, clock: FakeClock) -> None:
    made: list[Made] = []
    assert aggregates(client, 7)["queue_wait"] == {
        "p50_seconds": None, "p95_seconds": None, "count": 0}
    run_task(client, clock, made, wait=None)  # ended by a person: no wait
    assert aggregates(client, 7)["queue_wait"]["count"] == 0
    waits = [2.5, 0, 3600, 0.5, 2.5, 10, 0.000001, 59.75]
    for wait in waits:
        run_task(client, clock, made, wait=wait)
    answer = check(client, made, clock())
    ordered = sorted(waits)
    assert answer["queue_wait"] == {"p50_seconds": ordered[3], "p95_seconds": ordered[7],
                                    "count": len(waits)}


def test_timeseries_buckets_sum_cost_and_tokens(client, logs_dir: Path,
                                                clock: FakeClock) -> None:
    start = clock()
    lines = [old_record("old", start - timedelta(hours=3, minutes=30))]
    seed_lines(logs_dir, "metrics.jsonl", lines)
    made = [as_made(line) for line in lines]
    run_task(client, clock, made, usage={"input_tokens": 3, "cost_usd": 0.1}, wait=1)
    run_task(client, clock, made, usage={"input_tokens": 4, "output_tokens": 6,
                                         "cost_usd": 0.2}, wait=1)
    clock.advance(hours=2)
    run_task(client, clock, made, usage={"output_tokens": 1}, wait=1)
    run_task(client, clock, made, wait=1)
    clock.advance(hours=1)
    run_task(client, clock, made, wait=None)

    for window_days, bucket in ((1, "hour"), (2, "hour"), (7, "day")):
        response = client.get(f"/api/agent/metrics/timeseries?window_days={window_days}"
                              f"&bucket={bucket}")
        assert response.status_code == 200, response.json
        series = response.json["series"]
        width = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        cutoff = clock() - timedelta(days=window_days)
        for point in series:
            begins = datetime.fromisoformat(point["start"])
            inside = [r for r in made if begins <= r.at < begins + width and cutoff <= r.at]
            assert {name: point[name] for name in ("cost_usd", "input_tokens",
                                                   "output_tokens")} == sums(inside), point
            assert point["completed"] + point["failed"] == len(inside)
        known = [point for point in series if point["cost_usd"] is not None]
        total = aggregates(client, window_days)["usage"]
        assert sum(point["input_tokens"] or 0 for point in series) == total["input_tokens"]
        assert math.isclose(sum(point["cost_usd"] for point in known), total["cost_usd"])
    hourly = client.get("/api/agent/metrics/timeseries?window_days=1&bucket=hour").json["series"]
    by_start = {datetime.fromisoformat(point["start"]): point for point in hourly}
    hour = start.replace(minute=0, second=0, microsecond=0, tzinfo=timezone.utc)
    assert (by_start[hour]["cost_usd"], by_start[hour]["input_tokens"],
            by_start[hour]["output_tokens"]) == (0.3, 7, 6)
    assert (by_start[hour + timedelta(hours=2)]["cost_usd"],
            by_start[hour + timedelta(hours=2)]["output_tokens"]) == (None, 1)
    # Hours holding only records without usage, or none at all: null, never 0.
    for empty in (hour - timedelta(hours=4), hour - timedelta(hours=1), hour + timedelta(hours=3)):
        assert (by_start[empty]["cost_usd"], by_start[empty]["input_tokens"],
                by_start[empty]["output_tokens"]) == (None, None, None)
