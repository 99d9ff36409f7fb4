"""metrics_service: exactly-once records, nearest-rank, the rolling window."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from app.services.metrics_service import MetricsService
from app.services.metrics_window import nearest_rank
from tests.support import reference
from tests.support import FakeClock, jsonl_metrics

import numpy as np

pytestmark = pytest.mark.backend("jsonl")  # the JSONL metric store under the service


@pytest.fixture
def service(logs_dir: Path, clock: FakeClock) -> MetricsService:
    return jsonl_metrics(logs_dir / "metrics.jsonl", clock)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_format(service: MetricsService, clock: FakeClock) -> None:
    assert service.record_task("t1", "impl", "m", 12.5, "completed") is True
    [record] = lines(service.store.log.path)
    assert record == {
        "task_id": "t1", "task_type": "impl", "model": "m", "duration_seconds": 12.5,
        "status": "completed", "created_at": "2026-03-01T12:00:00.000000+00:00",
    }


def test_one_record_per_task_whoever_records_it(service: MetricsService, logs_dir) -> None:
    assert service.record_task("t1", "impl", "m", 1, "completed")
    assert not service.record_task("t1", "impl", "m", 2, "failed")
    other_process_view = jsonl_metrics(logs_dir / "metrics.jsonl")
    assert not other_process_view.record_task("t1", "impl", "m", 3, "completed")
    assert len(lines(service.store.log.path)) == 1


@pytest.mark.parametrize("args", [
    ("", "impl", "m", 1, "completed"),
    ("t", "impl", "m", -1, "completed"),
    ("t", "impl", "m", float("nan"), "completed"),
    ("t", "impl", "m", True, "completed"),
    ("t", "impl", "m", 1, "running"),
    ("t", "impl", "", 1, "failed"),
])
def test_record_task_rejects_bad_arguments(service: MetricsService, args) -> None:
    with pytest.raises(ValueError):
        service.record_task(*args)
    assert not service.store.log.path.exists()


@pytest.mark.parametrize("values,expected", [
    ([], {50: 0, 95: 0}),
    ([7], {50: 7, 95: 7}),
    ([1, 2, 3, 4], {50: 2, 95: 4}),
    (list(range(1, 21)), {50: 10, 95: 19}),
    (list(range(1, 101)), {50: 50, 95: 95}),
    ([5, 1, 4, 2, 3], {50: 3, 95: 5}),
])
def test_nearest_rank(values, expected) -> None:
    ordered = np.sort(np.array(values, np.int64))
    assert {p: nearest_rank(ordered, p) for p in expected} == expected


def test_aggregates_on_known_data(service: MetricsService) -> None:
    durations = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    for n, duration in enumerate(durations):
        service.record_task(f"t{n}", "impl" if n < 8 else "spec",
                            "a" if n % 2 else "b", duration, "failed" if n == 3 else "completed")
    answer = service.get_aggregates(7)
    assert answer["success_rate"] == {"completed": 9, "failed": 1, "total": 10, "rate": 0.9}
    assert answer["execution_time"]["p50_seconds"] == 50
    assert answer["execution_time"]["p95_seconds"] == 100
    assert answer["execution_time"]["max_seconds"] == 100
    unknown = {"cost_usd": None, "input_tokens": None, "output_tokens": None}
    assert answer["by_task_type"] == {
        "impl": {"count": 8, "completed": 7, "failed": 1, "success_rate": 0.88, **unknown},
        "spec": {"count": 2, "completed": 2, "failed": 0, "success_rate": 1.0, **unknown},
    }
    assert answer["by_model"] == {"b": {"count": 5, "avg_duration": 50.0, **unknown},
                                  "a": {"count": 5, "avg_duration": 60.0, **unknown}}
    # Records without usage, waits or labels: sums null, nothing to break down.
    assert answer["usage"] == {
        "tasks_with_usage": 0, "input_tokens": None, "output_tokens": None,
        "cache_read_input_tokens": None, "cache_creation_input_tokens": None,
        "cost_usd": None, "cost_per_completed_task": None}
    assert answer["queue_wait"] == {"p50_seconds": None, "p95_seconds": None, "count": 0}
    assert all(answer[f"by_{name}"] == {}
               for name in ("prompt_variant", "skill_version", "executor"))


def test_empty_store_gives_the_zeroed_shape(service: MetricsService) -> None:
    answer = service.get_aggregates(7)
    assert answer["success_rate"] == {"completed": 0, "failed": 0, "total": 0, "rate": 0.0}
    assert answer["execution_time"]["p50_seconds"] == 0
    assert answer["execution_time"]["p95_seconds"] == 0
    assert answer["by_task_type"] == {} and answer["by_model"] == {}
    assert answer["usage"]["tasks_with_usage"] == 0 and answer["usage"]["cost_usd"] is None
    assert answer["queue_wait"] == {"p50_seconds": None, "p95_seconds": None, "count": 0}
    assert answer["by_prompt_variant"] == answer["by_executor"] == {}


def test_window_moves_with_the_clock(service: MetricsService, clock: FakeClock) -> None:
    service.record_task("old", "spec", "m", 100, "failed")
    clock.advance(days=3)
    service.record_task("new", "impl", "m", 1, "completed")
    assert service.get_aggregates(7)["success_rate"]["total"] == 2
    assert service.get_aggregates(2)["success_rate"]["total"] == 1
    clock.advance(days=4, seconds=1)
    answer = service.get_aggregates(7)
    assert answer["success_rate"] == {"completed": 1, "failed": 0, "total": 1, "rate": 1.0}
    assert answer["execution_time"]["p95_seconds"] == 1
    assert list(answer["by_task_type"]) == ["impl"]
    clock.advance(days=3)
    assert service.get_aggregates(7)["success_rate"]["total"] == 0
    assert service.get_aggregates(7)["by_model"] == {}


def test_equal_durations_leave_the_window_together(service: MetricsService, clock) -> None:
    for n, duration in enumerate([5, 5, 5, 1, 9]):
        service.record_task(f"old{n}", "impl", "m", duration, "completed")
    clock.advance(hours=1)
    for n, duration in enumerate([5, 7, 7]):
        service.record_task(f"new{n}", "impl", "m", duration, "completed")
    assert service.get_aggregates(1)["execution_time"]["count"] == 8
    clock.advance(hours=23, minutes=30)
    answer = service.get_aggregates(1)
    assert answer["execution_time"] == {"p50_seconds": 7, "p90_seconds": 7, "p95_seconds": 7,
                                        "p99_seconds": 7, "max_seconds": 7, "count": 3}
    expected = reference.aggregates(reference.records_in(service.store.log.path), clock(), 1)
    assert reference.comparable(answer) == expected


def test_hand_written_out_of_order_duplicate_and_corrupt_lines(
    service: MetricsService, clock: FakeClock
) -> None:
    service.record_task("a", "impl", "m", 5, "completed")
    service.get_aggregates(7)
    with open(service.store.log.path, "a") as handle:
        handle.write('{"task_id": "b", "task_type": "spec", "model": "m", '
                     '"duration_seconds": 3, "status": "failed", '
                     '"created_at": "2026-02-28T00:00:00Z"}\n')
        handle.write('{"task_id": "a", "task_type": "impl", "model": "m", '
                     '"duration_seconds": 99, "status": "failed", '
                     '"created_at": "2026-03-01T11:00:00+00:00"}\n')
        handle.write('{"task_id": "c", "status": "completed"}\n')
        handle.write("garbage\n")
        handle.write('{"task_id": "d", "task_type": "spec", "model": "m", '
                     '"duration_seconds": 1, "status": "completed", '
                     '"created_at": "2026-01-01T00:00:00+00:00"}\n')
    answer = service.get_aggregates(7)
    expected = reference.aggregates(reference.records_in(service.store.log.path), clock(), 7)
    assert reference.comparable(answer) == expected
    assert answer["success_rate"]["total"] == 2
    assert not service.record_task("b", "spec", "m", 3, "failed")


def _record_range(path: str, ids: list[str]) -> None:
    service = jsonl_metrics(path)
    for task_id in ids:
        service.record_task(task_id, "impl", "m", 1.0, "completed")


def test_processes_recording_the_same_tasks_leave_one_record_each(logs_dir: Path) -> None:
    path = str(logs_dir / "metrics.jsonl")
    ids = [f"task-{n}" for n in range(150)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_record_range, args=(path, ids[::step]))
                 for step in (1, 1, 2, 3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    recorded = [record["task_id"] for record in lines(Path(path))]
    assert sorted(recorded) == sorted(ids)


def test_module_functions_use_the_environment(logs_dir: Path, monkeypatch) -> None:
    from app.services import metrics_service

    monkeypatch.setenv("AGENT_LOGS_DIR", str(logs_dir))
    assert metrics_service.record_task("x", "heal", "m", 2, "failed")
    assert not metrics_service.record_task("x", "heal", "m", 2, "failed")
    assert metrics_service.get_aggregates(7)["by_task_type"]["heal"]["failed"] == 1
