"""The store contract: every method of the interfaces in ``app/storage/stores.py``, called
directly, answers the same on every backend. A new backend implements the Protocols and
is added to ``BACKENDS`` (conftest), which this suite's ``stores`` fixture runs over."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from app.clock import isoformat
from app.storage.backends import open_stores
from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import stored_record, to_micros
from app.storage.metric_totals import finished_counts
from app.storage.stores import (
    MAX_LOG_BYTES,
    MetricStore,
    StoreUnavailable,
    Task,
    TaskExists,
    TaskStore,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@dataclass
class Stores:
    tasks: TaskStore
    metrics: MetricStore
    reopen: Callable[[], tuple[TaskStore, MetricStore]]
    """Another pair of stores on the same data, as another process would open."""


@pytest.fixture
def stores(backend: str, logs_dir: Path) -> Iterator[Stores]:
    """The task and metric store of one backend (see ``backend`` in conftest)."""
    settings = {"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                "AGENT_DATABASE_URL": os.environ.get("AGENT_DATABASE_URL"),
                "AGENT_DATABASE_POOL_SIZE": 4}
    opened: list[tuple[TaskStore, MetricStore]] = []

    def open_pair() -> tuple[TaskStore, MetricStore]:
        opened.append(open_stores(settings))
        return opened[-1]

    tasks, metrics = open_pair()
    yield Stores(tasks, metrics, open_pair)
    for pair in opened:
        for store in pair:
            store.close()


def at(minutes: float) -> str:
    return isoformat(NOW + timedelta(minutes=minutes))


def task(task_id: str, *, status: str = "pending", task_type: str = "impl",
         created: float = 0, updated: float | None = None, **fields: Any) -> Task:
    return {"id": task_id, "direction": f"do {task_id}", "task_type": task_type,
            "status": status, "model": "local/tiny", "context": {}, "output": None,
            "created_at": at(created), "updated_at": at(created if updated is None else updated),
            "started_at": None, "duration_seconds": None, "runner_id": None,
            "lease_expires_at": None, "attempts": 0, **fields}


def record_of(task_id: str, status: str = "completed", duration: float = 2.5,
              created: float = 0) -> dict[str, Any]:
    return stored_record(task_id, "impl", "local/tiny", duration, status, at(created))


def running(task_id: str, runner_id: str, lease_ends: float, created: float = 0) -> Task:
    return task(task_id, status="running", created=created, runner_id=runner_id,
                lease_expires_at=at(lease_ends), attempts=1)


def ids(tasks: list[Task]) -> list[str]:
    return [found["id"] for found in tasks]


# Tasks: insert, get, page, counts


def test_an_inserted_task_reads_back_whole(stores: Stores) -> None:
    stored = task("t1", context={"repo": "x"})
    stores.tasks.insert(stored)
    assert stores.tasks.get("t1") == stored
    assert stores.tasks.get("missing") is None


def test_inserting_an_id_the_store_holds_raises_task_exists_and_changes_nothing(
        stores: Stores) -> None:
    stores.tasks.insert(task("t1"))
    with pytest.raises(TaskExists):
        stores.tasks.insert(task("t1", status="failed", direction="other"))
    assert stores.tasks.get("t1") == task("t1")
    assert stores.tasks.counts() == {"pending": 1}


def test_pages_filter_order_and_count(stores: Stores) -> None:
    for number, (status, task_type) in enumerate(
            [("pending", "impl"), ("running", "spec"), ("pending", "spec"),
             ("completed", "impl"), ("pending", "impl")]):
        stores.tasks.insert(task(f"t{number}", status=status, task_type=task_type,
                                 created=number, updated=10 - number))
    page = stores.tasks.page
    assert page(None, None, False, None) == (
        [stores.tasks.get(f"t{n}") for n in range(5)], 5)
    assert ids(page(("pending",), None, False, None)[0]) == ["t0", "t2", "t4"]
    assert ids(page(("pending",), "impl", True, None)[0]) == ["t4", "t0"]
    assert ids(page(("pending", "running"), "spec", False, None)[0]) == ["t1", "t2"]
    assert page(None, None, True, 2, offset=1) == (
        [stores.tasks.get("t3"), stores.tasks.get("t2")], 5)
    assert ids(page(None, None, True, 2, by="updated_at")[0]) == ["t0", "t1"]
    assert ids(page(None, "impl", False, None, by="updated_at")[0]) == ["t4", "t3", "t0"]
    assert page(("failed",), None, False, 10) == ([], 0)


def test_ties_in_time_are_ordered_by_id(stores: Stores) -> None:
    for task_id in ("b", "c", "a"):
        stores.tasks.insert(task(task_id, created=1))
    assert ids(stores.tasks.page(None, None, False, None)[0]) == ["a", "b", "c"]
    assert ids(stores.tasks.page(None, None, True, None)[0]) == ["c", "b", "a"]


def test_an_unknown_order_is_a_value_error(stores: Stores) -> None:
    stores.tasks.insert(task("t1"))
    with pytest.raises(ValueError, match="ordered by one of"):
        stores.tasks.page(None, None, False, None, by="direction")


def test_counts_are_per_status_present(stores: Stores) -> None:
    assert stores.tasks.counts() == {}
    for number, status in enumerate(["pending", "pending", "failed", "needs_decision"]):
        stores.tasks.insert(task(f"t{number}", status=status))
    assert stores.tasks.counts() == {"pending": 2, "failed": 1, "needs_decision": 1}


# Transactions: claims, leases, records


def test_a_save_is_laid_over_the_state_and_seen_inside_and_after(stores: Stores) -> None:
    stores.tasks.insert(task("t1"))
    with stores.tasks.transaction() as tx:
        tx.save({"id": "t1", "status": "running", "runner_id": "r1"})
        assert tx.get("t1") == {**task("t1"), "status": "running", "runner_id": "r1"}
    assert stores.tasks.get("t1") == {**task("t1"), "status": "running", "runner_id": "r1"}
    assert stores.tasks.counts() == {"running": 1}


def test_saving_a_task_the_store_does_not_hold_is_a_lookup_error(stores: Stores) -> None:
    with pytest.raises(LookupError), stores.tasks.transaction() as tx:
        tx.save({"id": "ghost", "status": "running"})
    assert stores.tasks.get("ghost") is None


def test_the_oldest_pending_task_of_the_types_asked_is_offered(stores: Stores) -> None:
    stores.tasks.insert(task("late-impl", created=3))
    stores.tasks.insert(task("spec", task_type="spec", created=2))
    stores.tasks.insert(task("early-impl", created=1))
    stores.tasks.insert(task("done", status="completed", created=0))
    with stores.tasks.transaction() as tx:
        assert tx.next_pending(None, NOW)["id"] == "early-impl"
        assert tx.next_pending(["spec"], NOW)["id"] == "spec"
        assert tx.next_pending(["spec", "impl"], NOW)["id"] == "early-impl"
        assert tx.next_pending(["review"], NOW) is None


def test_claims_go_by_priority_then_age_and_wait_for_run_after(stores: Stores) -> None:
    stores.tasks.insert(task("old-low", created=0, priority=-5))
    stores.tasks.insert(task("old-none", created=1))
    stores.tasks.insert(task("new-high", created=5, priority=10))
    stores.tasks.insert(task("urgent-later", created=0, priority=50, run_after=at(30)))
    stores.tasks.insert(task("new-high-2", created=6, priority=10))
    with stores.tasks.transaction() as tx:
        assert tx.next_pending(None, NOW)["id"] == "new-high"
        assert tx.next_pending(None, NOW + timedelta(minutes=30))["id"] == "urgent-later"
        tx.save({"id": "new-high", "status": "running"})
        assert tx.next_pending(None, NOW)["id"] == "new-high-2"
        tx.save({"id": "new-high-2", "priority": -10})
        assert tx.next_pending(None, NOW)["id"] == "old-none"
        tx.save({"id": "urgent-later", "run_after": None})
        assert tx.next_pending(None, NOW)["id"] == "urgent-later"
    assert stores.tasks.get("new-high-2")["priority"] == -10


def test_claims_skip_excluded_models(stores: Stores) -> None:
    stores.tasks.insert(task("a", created=0, model="cloud/a"))
    stores.tasks.insert(task("b", created=1, model="cloud/b"))
    stores.tasks.insert(task("c", created=2, model="local/c", priority=-1))
    with stores.tasks.transaction() as tx:
        assert tx.next_pending(None, NOW, frozenset({"cloud/a"}))["id"] == "b"
        assert tx.next_pending(None, NOW, frozenset({"cloud/a", "cloud/b"}))["id"] == "c"
        assert tx.next_pending(None, NOW, frozenset({"cloud/a", "cloud/b", "local/c"})) is None
        assert tx.next_pending(None, NOW, frozenset({"never/seen"}))["id"] == "a"


def test_running_tasks_are_counted_per_model_under_live_leases(stores: Stores) -> None:
    stores.tasks.insert({**running("a1", "r1", lease_ends=20), "model": "cloud/a"})
    stores.tasks.insert({**running("a2", "r2", lease_ends=5), "model": "cloud/a"})
    stores.tasks.insert({**running("b1", "r3", lease_ends=20), "model": "cloud/b"})
    stores.tasks.insert(task("a3", model="cloud/a"))
    now = NOW + timedelta(minutes=1)
    with stores.tasks.transaction() as tx:
        tx.lock(["model:cloud/a", "tier:cloud"])
        assert tx.running_count(["cloud/a"], now) == 2
        assert tx.running_count(["cloud/a", "cloud/b"], now) == 3
        assert tx.running_count(["cloud/a"], NOW + timedelta(minutes=10)) == 1
        assert tx.running_count(["nobody/runs"], now) == 0
        tx.save({"id": "a3", "status": "running", "runner_id": "r4",
                 "lease_expires_at": at(30)})
        assert tx.running_count(["cloud/a"], now) == 3
        tx.save({"id": "a1", "status": "cancelled", "runner_id": None,
                 "lease_expires_at": None})
        assert tx.running_count(["cloud/a"], now) == 2


def test_a_lock_is_held_by_one_transaction_at_a_time(stores: Stores) -> None:
    """The second holder of a key waits for the first transaction to end, and then
    sees what it wrote."""
    stores.tasks.insert(task("t1", model="cloud/a"))
    other_tasks, _ = stores.reopen()
    events: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with stores.tasks.transaction() as tx:
            tx.lock(["model:cloud/a"])
            first_holds.set()
            threading.Event().wait(0.3)
            tx.save({"id": "t1", "status": "running", "runner_id": "r1",
                     "lease_expires_at": at(30)})
            events.append("first saved")

    holder = threading.Thread(target=first)
    holder.start()
    assert first_holds.wait(10)
    with other_tasks.transaction() as tx:
        tx.lock(["model:cloud/a"])
        events.append("second locked")
        assert tx.running_count(["cloud/a"], NOW) == 1
    holder.join()
    assert events == ["first saved", "second locked"]


def test_a_lock_another_transaction_holds_is_not_waited_for_when_asked_not_to(
        stores: Stores) -> None:
    """Without waiting, a key is had only once no other transaction holds it: on a store
    whose transactions exclude each other whole, that is when the second one starts."""
    other_tasks, _ = stores.reopen()
    first_holds, first_ending = threading.Event(), threading.Event()

    def first() -> None:
        with stores.tasks.transaction() as tx:
            tx.lock(["model:cloud/a"])
            first_holds.set()
            threading.Event().wait(1)
            first_ending.set()

    holder = threading.Thread(target=first)
    holder.start()
    assert first_holds.wait(10)
    with other_tasks.transaction() as tx:
        had = tx.lock(["model:cloud/a", "model:cloud/b"], wait=False)
        assert had == first_ending.is_set()
        assert tx.lock(["model:cloud/b"], wait=False)
    holder.join()


def test_a_cancelled_task_is_ended_and_compacted_like_other_ended_ones(stores: Stores) -> None:
    stores.tasks.insert(task("old-cancelled", status="cancelled", updated=1))
    stores.tasks.insert(task("new-cancelled", status="cancelled", created=1, updated=30))
    assert stores.tasks.counts() == {"cancelled": 2}
    assert ids(stores.tasks.page(("cancelled",), None, False, None)[0]) == [
        "old-cancelled", "new-cancelled"]
    with stores.tasks.transaction() as tx:
        assert tx.next_pending(None, NOW) is None
        assert tx.unrecorded() == []
    _, dropped = stores.tasks.compact(NOW + timedelta(minutes=10))
    assert dropped == {"old-cancelled"}


def test_a_task_being_claimed_is_not_offered_to_another_claimer(stores: Stores) -> None:
    """Two claimers at once, each in its own store as in its own process: the second is
    offered the next task, never the first one's."""
    stores.tasks.insert(task("first", created=1))
    stores.tasks.insert(task("second", created=2))
    other_tasks, _ = stores.reopen()
    claimed: dict[str, str] = {}
    first_taken = threading.Event()

    def claim(store: TaskStore, runner_id: str, hold_seconds: float) -> None:
        with store.transaction() as tx:
            offered = tx.next_pending(None, NOW)
            assert offered is not None
            tx.save({"id": offered["id"], "status": "running", "runner_id": runner_id})
            claimed[runner_id] = offered["id"]
            first_taken.set()
            threading.Event().wait(hold_seconds)

    first = threading.Thread(target=claim, args=(stores.tasks, "r1", 0.3))
    first.start()
    assert first_taken.wait(10)
    claim(other_tasks, "r2", 0)
    first.join()
    assert claimed == {"r1": "first", "r2": "second"}
    assert stores.tasks.counts() == {"running": 2}


def test_leases_held_and_expired(stores: Stores) -> None:
    now = NOW + timedelta(minutes=10)
    stores.tasks.insert(running("live-old", "r1", lease_ends=20, created=1))
    stores.tasks.insert(running("live-new", "r1", lease_ends=20, created=2))
    stores.tasks.insert(running("lapsed", "r1", lease_ends=5, created=0))
    stores.tasks.insert(running("lapsed-2", "r2", lease_ends=10, created=3))
    stores.tasks.insert(task("waiting"))
    with stores.tasks.transaction() as tx:
        assert tx.held_by("r1", now)["id"] == "live-old"
        assert tx.held_by("r2", now) is None
        assert tx.held_by("r3", now) is None
        assert ids(tx.expired(now)) == ["lapsed", "lapsed-2"]
        assert ids(tx.expired(now, "lapsed-2")) == ["lapsed-2"]
        assert tx.expired(now, "live-old") == []
        assert tx.expired(now, "no-such-task") == []
    assert stores.tasks.has_due(now)
    assert stores.tasks.has_due(now, "lapsed")
    assert not stores.tasks.has_due(now, "live-new")
    assert not stores.tasks.has_due(now, "no-such-task")
    assert not stores.tasks.has_due(NOW)


def test_a_final_task_is_unrecorded_until_its_record_is_written_once(stores: Stores) -> None:
    stores.tasks.insert(task("t1"))
    stores.tasks.insert(task("t2"))
    with stores.tasks.transaction() as tx:
        assert tx.unrecorded() == []
        for task_id in ("t2", "t1"):
            tx.save({"id": task_id, "status": "completed", "recorded": False})
        assert ids(tx.unrecorded()) == ["t1", "t2"]
    assert stores.tasks.has_due(NOW)
    with stores.tasks.transaction() as tx:
        tx.record(record_of("t1"))
        tx.record(record_of("t1", status="failed"))
        assert ids(tx.unrecorded()) == ["t2"]
        assert tx.get("t1")["recorded"] is True
    with stores.tasks.transaction() as tx:
        tx.record(record_of("t2", duration=4.0))
    assert not stores.tasks.has_due(NOW)
    assert [(r.task_id, r.completed, r.duration_us) for r in stores.metrics.records()] == [
        ("t1", True, 2_500_000), ("t2", True, 4_000_000)]


# Tasks: compaction and logs


def test_compaction_drops_old_final_recorded_tasks_and_their_logs(stores: Stores) -> None:
    stores.tasks.insert(task("old-done", status="completed", updated=1, recorded=True))
    stores.tasks.insert(task("old-unrecorded", status="failed", updated=1, recorded=False))
    stores.tasks.insert(task("old-pending", updated=1))
    stores.tasks.insert(task("new-done", status="failed", updated=30, recorded=True))
    stores.tasks.append_log("old-done", "gone\n")
    stores.tasks.append_log("new-done", "kept\n")
    report, dropped = stores.tasks.compact(NOW + timedelta(minutes=10))
    assert dropped == {"old-done"}
    assert (report.kept, report.expired) == (3, 1)
    assert stores.tasks.get("old-done") is None
    assert {found["id"] for found in stores.tasks.page(None, None, False, None)[0]} == {
        "old-unrecorded", "old-pending", "new-done"}
    assert stores.tasks.read_log("old-done") == ""
    assert stores.tasks.read_log("new-done") == "kept\n"


def test_task_logs_append_keep_the_last_part_and_go(stores: Stores) -> None:
    assert stores.tasks.read_log("t1") == ""
    stores.tasks.append_log("t1", "line 1\n")
    stores.tasks.append_log("t1", "line 2\n")
    stores.tasks.append_log("t2", "other\n")
    assert stores.tasks.read_log("t1") == "line 1\nline 2\n"
    stores.tasks.append_log("t2", "x" * MAX_LOG_BYTES + "end")
    assert stores.tasks.read_log("t2") == ("other\n" + "x" * MAX_LOG_BYTES + "end")[
        -MAX_LOG_BYTES:]
    stores.tasks.remove_logs({"t1", "never-logged"})
    assert stores.tasks.read_log("t1") == ""
    assert stores.tasks.read_log("t2").endswith("end")


# Metrics: exactly once, columns, totals, compaction


def test_a_record_is_stored_once_per_task_id(stores: Stores) -> None:
    assert stores.metrics.record(record_of("a", duration=1.0))
    assert not stores.metrics.record(record_of("a", status="failed", duration=9.0))
    assert stores.metrics.record(record_of("b", status="failed", duration=3.0, created=1))
    assert [(r.task_id, r.completed, r.duration_us, r.created_us)
            for r in stores.metrics.records()] == [
        ("a", True, 1_000_000, to_micros(NOW)),
        ("b", False, 3_000_000, to_micros(NOW + timedelta(minutes=1)))]


def test_reads_see_columns_of_every_record_asked_for(stores: Stores) -> None:
    for minute in range(4):
        stores.metrics.record(record_of(f"r{minute}", duration=minute + 1.0, created=minute))

    def durations(columns: RecordColumns) -> list[int]:
        return sorted(columns.column("duration_us").tolist())

    assert stores.metrics.read(durations) == [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    since = stores.metrics.read(durations, since_us=to_micros(NOW + timedelta(minutes=2)))
    assert {3_000_000, 4_000_000} <= set(since)


def test_totals_outlive_a_compaction(stores: Stores) -> None:
    stores.metrics.record(record_of("old-ok", created=0))
    stores.metrics.record(record_of("old-bad", status="failed", created=1))
    stores.metrics.record(record_of("new-ok", created=30))
    before = finished_counts(stores.metrics.totals())
    report = stores.metrics.compact(to_micros(NOW + timedelta(minutes=10)))
    assert (report.kept, report.expired) == (1, 2)
    assert [r.task_id for r in stores.metrics.records()] == ["new-ok"]
    assert finished_counts(stores.metrics.totals()) == before == {
        ("impl", "local/tiny", "completed"): 2, ("impl", "local/tiny", "failed"): 1}
    assert not stores.metrics.record(record_of("new-ok"))


# Both: writable, close and reopen


def test_stores_are_writable_and_say_where_they_are(stores: Stores) -> None:
    assert stores.tasks.writable() and stores.metrics.writable()
    assert stores.tasks.location and stores.metrics.location
    assert "password" not in stores.tasks.location


def test_closed_stores_open_again_and_another_process_sees_the_same(stores: Stores) -> None:
    stores.tasks.insert(task("t1"))
    stores.metrics.record(record_of("t1"))
    stores.tasks.close()
    stores.metrics.close()
    stores.tasks.insert(task("t2", created=1))
    assert stores.metrics.record(record_of("t2"))
    other_tasks, other_metrics = stores.reopen()
    assert ids(other_tasks.page(None, None, False, None)[0]) == ["t1", "t2"]
    assert [r.task_id for r in other_metrics.records()] == ["t1", "t2"]
    assert not other_metrics.record(record_of("t1"))


def test_a_store_that_cannot_be_reached_is_unavailable(
        stores: Stores, backend: str, tmp_path: Path) -> None:
    """Writes that cannot happen raise StoreUnavailable (the API's 503), not another error."""
    if backend == "postgresql":
        settings = {"AGENT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                    "AGENT_DATABASE_POOL_SIZE": 1}
    else:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        settings = {"AGENT_LOGS_DIR": str(blocker / "logs"), "AGENT_FSYNC": False}
    tasks, metrics = open_stores(settings)
    try:
        assert not tasks.writable() and not metrics.writable()
        with pytest.raises(StoreUnavailable):
            tasks.insert(task("t1"))
        with pytest.raises(StoreUnavailable):
            metrics.record(record_of("t1"))
    finally:
        tasks.close()
        metrics.close()
