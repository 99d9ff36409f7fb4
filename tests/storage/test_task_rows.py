"""The JSONL task store keeps only rows in memory and reads states back from the file:
for any sequence of stored lines (whole tasks, changes, lines written by hand, damaged
lines, ids that share a prefix, equal times, appends read in several goes) it answers as
replaying every line into whole states would."""
from __future__ import annotations

import random
from unittest.mock import patch
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.models.agent import STATUSES, TASK_TYPES
from app.storage.jsonl import task_rows
from app.storage.jsonl.metrics import JsonlMetricStore
from app.storage.jsonl.tasks import JsonlTaskStore
from app.storage.jsonl.task_rows import TaskRows, merged_state, micros
from tests.support import jsonl

IDS = ["a", "b", "task-0001", "task-0002", "task-00010", "task-0001x", "é-1",
       "0f3c2a1b9d8e7f60a1b2c3d4e5f60718", "0f3c2a1b00000000a1b2c3d4e5f60718"]
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
NOW = BASE + timedelta(seconds=30)


def stamp(seconds: int, style: int) -> str:
    moment = BASE + timedelta(seconds=seconds)
    if style == 0:
        return moment.isoformat(timespec="microseconds")
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.astimezone(timezone(timedelta(hours=2))).isoformat()


times = st.builds(stamp, st.integers(0, 40), st.integers(0, 2))
close_times = st.builds(stamp, st.integers(0, 3), st.integers(0, 2))
statuses = st.sampled_from([*STATUSES, "bogus", ["a", "list"]])
task_types = st.sampled_from([*TASK_TYPES, "bogus", {"a": "dict"}])
runners = st.sampled_from(["r1", "r2", None])
models = st.sampled_from(["m", "n", "o"])
priorities = st.one_of(st.integers(-2, 2), st.sampled_from([True, "high", 2**40]))
run_afters = st.one_of(st.none(), times, st.just("soon"))
whole = st.fixed_dictionaries(
    {"id": st.sampled_from(IDS), "direction": st.just("do it"), "task_type": task_types,
     "status": statuses, "model": models, "context": st.just({}),
     "created_at": close_times, "updated_at": close_times, "started_at": st.none()},
    optional={"runner_id": runners, "lease_expires_at": st.one_of(st.none(), times),
              "recorded": st.booleans(), "command": st.just("old rendered command"),
              "priority": priorities, "run_after": run_afters})
change = st.fixed_dictionaries(
    {"id": st.sampled_from(IDS)},
    optional={"status": statuses, "updated_at": times, "runner_id": runners,
              "lease_expires_at": st.one_of(st.none(), times), "recorded": st.booleans(),
              "created_at": times, "task_type": task_types, "output": st.text(max_size=5),
              "priority": priorities, "run_after": run_afters, "model": models})
junk = st.sampled_from([{"id": 5}, {"no": "id"}, {"id": ""}])
lines = st.lists(st.one_of(whole, whole, change, change, change, junk), min_size=4, max_size=60)


def replay(stored: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for line in stored:
        task_id = line.get("id")
        if isinstance(task_id, str) and task_id:
            state = merged_state(latest.get(task_id), line)
            if state is not None:
                latest[task_id] = state
    return latest


def ordered(states, by: str, newest_first: bool) -> list[dict]:
    return sorted(states, key=lambda state: (micros(state[by]), state["id"]),
                  reverse=newest_first)


def due(state: dict) -> bool:
    return state.get("run_after") is None or micros(state["run_after"]) <= micros(
        NOW.isoformat())


def claim_order(states: list[dict]) -> list[dict]:
    """Pending tasks due by NOW, as claims take them: highest priority, then oldest."""
    return sorted((s for s in ordered(states, "created_at", False)
                   if s["status"] == "pending" and due(s)),
                  key=lambda state: -state.get("priority", 0))


def leased(state: dict) -> bool:
    return state["status"] == "running" and state.get("lease_expires_at") is not None


def expired(state: dict) -> bool:
    return leased(state) and datetime.fromisoformat(
        state["lease_expires_at"].replace("Z", "+00:00")) <= NOW


@pytest.mark.parametrize("bulk_lines", [task_rows.BULK_LINES, 1],
                         ids=["few-lines-one-by-one", "every-batch-scanned"])
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=lines, cuts=st.lists(st.integers(0, 40), max_size=4))
def test_rows_answer_as_a_replay_of_every_line(tmp_path: Path, bulk_lines, stored,
                                               cuts) -> None:
    with patch.object(task_rows, "BULK_LINES", bulk_lines):
        check_rows_answer_as_a_replay(tmp_path, stored, cuts)


def check_rows_answer_as_a_replay(tmp_path: Path, stored, cuts) -> None:
    folder = Path(tmp_path, str(len(list(tmp_path.iterdir()))))
    folder.mkdir()
    path = folder / "tasks.jsonl"
    store = JsonlTaskStore(path, metrics=JsonlMetricStore(folder / "metrics.jsonl"),
                           fsync=False)
    edges = sorted({0, len(stored), *(cut for cut in cuts if cut < len(stored))})
    with open(path, "ab") as handle:
        for start, end in zip(edges, edges[1:]):
            handle.write(jsonl(stored[start:end]))
            handle.flush()
            store.refresh()  # appends are taken in over several reads
    latest = replay(stored)
    states = list(latest.values())

    for task_id in IDS:
        assert store.get(task_id) == latest.get(task_id)
    assert store.counts() == {status: n for status in STATUSES
                              if (n := sum(s["status"] == status for s in states))}
    for filters in [(None, None), (("pending",), None), (("pending",), "impl"),
                    (("completed", "failed"), None), (None, "spec")]:
        matching = [s for s in states if (filters[0] is None or s["status"] in filters[0])
                    and (filters[1] is None or s["task_type"] == filters[1])]
        for by in ("created_at", "updated_at"):
            for newest_first in (True, False):
                expected = ordered(matching, by, newest_first)
                for limit, offset in [(None, 0), (2, 0), (3, 1)]:
                    end = None if limit is None else offset + limit
                    assert store.page(*filters, newest_first, limit, offset, by) == (
                        expected[offset:end], len(matching))

    in_claim_order = ordered(states, "created_at", False)
    with store.transaction() as tx:
        for types in (None, ["impl"], ["spec", "test"]):
            for excluded in (frozenset(), frozenset({"m"}), frozenset({"n", "o"})):
                pending = [s for s in claim_order(states) if s["model"] not in excluded
                           and (not types or s["task_type"] in types)]
                assert tx.next_pending(types, NOW, excluded) == (
                    pending[0] if pending else None)
        for counted in (["m"], ["n", "o"]):
            assert tx.running_count(counted, NOW) == sum(
                leased(s) and not expired(s) and s["model"] in counted for s in states)
        for runner in ("r1", "r2"):
            held = [s for s in in_claim_order if leased(s) and not expired(s)
                    and s.get("runner_id") == runner]
            assert tx.held_by(runner, NOW) == (held[0] if held else None)
        assert tx.expired(NOW) == sorted((s for s in states if expired(s)),
                                         key=lambda s: s["id"])
        assert tx.unrecorded() == sorted((s for s in states if s.get("recorded") is False),
                                         key=lambda s: s["id"])
    assert list(store.states()) == in_claim_order


def test_a_read_that_fails_halfway_is_read_again_in_full(tmp_path, monkeypatch) -> None:
    path = tmp_path / "tasks.jsonl"
    store = JsonlTaskStore(path, metrics=JsonlMetricStore(tmp_path / "metrics.jsonl"),
                           fsync=False)
    task = {"direction": "d", "task_type": "impl", "status": "pending", "model": "m",
            "context": {}, "created_at": stamp(0, 0), "updated_at": stamp(0, 0)}
    path.write_bytes(jsonl({**task, "id": f"t{n}"} for n in range(3)))
    take = TaskRows.take_columns

    def failing(rows, offsets, lines):
        raise MemoryError("taking lines in failed")

    monkeypatch.setattr(TaskRows, "take_columns", failing)
    with pytest.raises(MemoryError):
        store.counts()
    monkeypatch.setattr(TaskRows, "take_columns", take)
    assert store.counts() == {"pending": 3}


def test_tasks_of_one_time_are_listed_by_id_whichever_read_brings_them(tmp_path) -> None:
    """Rows of equal created_at go in by id prefix and, where prefixes are equal too, by
    the id read from the file, also among rows placed by earlier reads."""
    path = tmp_path / "tasks.jsonl"
    store = JsonlTaskStore(path, metrics=JsonlMetricStore(tmp_path / "metrics.jsonl"),
                           fsync=False)
    ids = [*IDS, *(f"task-{n:04d}" for n in range(3, 40)), "task-0001y", "task-000", "b-2"]
    random.Random(7).shuffle(ids)
    tasks = [{"id": task_id, "direction": "d", "task_type": "impl", "status": "pending",
              "model": "m", "context": {}, "created_at": stamp(n % 2, 0),
              "updated_at": stamp(0, 0), "started_at": None} for n, task_id in enumerate(ids)]
    with open(path, "ab") as handle:
        for start in range(0, len(tasks), 3):
            handle.write(jsonl(tasks[start:start + 3]))
            handle.flush()
            store.refresh()
    assert store.page(None, None, False, None) == (ordered(tasks, "created_at", False),
                                                   len(tasks))
