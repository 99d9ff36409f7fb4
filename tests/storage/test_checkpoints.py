"""Checkpoints beside the JSONL stores: a process that starts from one answers exactly
as one that reads the whole file, whatever happened to the store after it was taken
(appends, torn and corrupt lines, truncations, replacements, compactions) and whatever
happened to the checkpoint (cut short, a byte flipped, another store's)."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.storage.jsonl import checkpoint, metrics, tasks
from app.storage.jsonl.log_reader import READ_CHUNK_BYTES, LogReader
from app.storage.jsonl.metrics import JsonlMetricStore
from app.storage.jsonl.tasks import JsonlTaskStore
from app.storage.metric_records import to_micros
from tests.support import jsonl

BASE = datetime(2026, 3, 1, tzinfo=timezone.utc)

CHECKPOINT_KINDS = {"metrics": metrics.CHECKPOINT_KIND, "tasks": tasks.CHECKPOINT_KIND}


def metric_line(number: int) -> dict:
    return {"task_id": f"t{number % 23}", "task_type": ["spec", "impl"][number % 2],
            "model": f"m{number % 3}", "duration_seconds": float(number % 7),
            "status": ["completed", "failed"][number % 3 == 0],
            "created_at": (BASE + timedelta(hours=number % 50)).isoformat()}


def task_line(number: int) -> dict:
    task_id = f"task-{number % 13}"
    if number % 3 == 0:
        stamp = (BASE + timedelta(minutes=number % 5)).isoformat()
        return {"id": task_id, "direction": "d", "task_type": "impl", "status": "pending",
                "model": "m", "context": {}, "created_at": stamp, "updated_at": stamp,
                "started_at": None}
    status = ["running", "completed", "failed", "pending"][number % 4]
    return {"id": task_id, "status": status, "recorded": number % 5 != 0,
            "updated_at": (BASE + timedelta(minutes=number % 7)).isoformat(),
            "runner_id": "r", "lease_expires_at": (BASE + timedelta(hours=1)).isoformat()}


KINDS = {
    "metrics": (metric_line, lambda path, every: JsonlMetricStore(
        path, fsync=False, checkpoint_bytes=every)),
    "tasks": (task_line, lambda path, every: JsonlTaskStore(
        path, metrics=JsonlMetricStore(path.with_name("m.jsonl"), fsync=False),
        fsync=False, checkpoint_bytes=every)),
}


def answers(kind: str, store) -> object:
    """Everything the store tells, in one comparable value."""
    if kind == "metrics":
        columns = store.read(lambda c: sorted(zip(
            c.column("created_us").tolist(), c.column("duration_us").tolist(),
            c.column("completed").tolist(),
            [c.task_types.names[code] for code in c.column("type_code").tolist()],
            [c.models.names[code] for code in c.column("model_code").tolist()])))
        return (columns, store.totals(),
                [store._task_ids.contains(f"t{n}") for n in range(23)])
    page = store.page(None, None, True, None)
    pending = store.page(("pending",), None, False, None)
    with store.transaction() as tx:
        due = (tx.next_pending(None, BASE), tx.held_by("r", BASE),
               tx.expired(BASE + timedelta(hours=2)), tx.unrecorded())
    return (page, pending, store.counts(), due,
            [store.get(f"task-{n}") for n in range(13)])


def record_chunk_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The offsets every reader's chunks start at, from now until the monkeypatch is undone."""
    starts: list[int] = []
    poll_chunks = LogReader.poll_chunks

    def recording(reader: LogReader):
        for chunk in poll_chunks(reader):
            starts.append(chunk.start)
            yield chunk

    monkeypatch.setattr(LogReader, "poll_chunks", recording)
    return starts


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 400), st.integers(1, 6)),
    st.tuples(st.just("torn"), st.integers(0, 400), st.integers(1, 20)),
    st.tuples(st.just("corrupt"), st.integers(0, 10), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("replace"), st.integers(0, 400), st.integers(0, 6)),
    st.tuples(st.just("compact"), st.integers(0, 60), st.integers(0, 1)),
    st.tuples(st.just("checkpoint"), st.just(0), st.just(0)),
    st.tuples(st.just("damage checkpoint"), st.integers(0, 10_000), st.integers(0, 1)),
), min_size=1, max_size=14)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_a_store_started_from_its_checkpoint_answers_as_one_read_from_scratch(
    tmp_path: Path, kind: str, steps: list[tuple[str, int, int]]
) -> None:
    make_line, make_store = KINDS[kind]
    folder = tmp_path / str(len(list(tmp_path.iterdir())))
    folder.mkdir()
    path = folder / f"{kind}.jsonl"
    path.touch()
    follower = make_store(path, 0)  # keeps reading and checkpointing as the file changes
    for action, number, count in steps:
        if action == "append":
            append(path, jsonl(make_line(number + n) for n in range(count)))
        elif action == "torn":
            append(path, jsonl([make_line(number)])[:count])
        elif action == "corrupt":
            append(path, b'{"not json' + bytes([number]) + b"\n")
        elif action == "truncate":
            os.truncate(path, path.stat().st_size * number // 100)
        elif action == "replace":
            replacement = path.with_name("replacement")
            replacement.write_bytes(jsonl(make_line(number + n) for n in range(count)))
            os.replace(replacement, path)
        elif action == "compact":
            # by a process that writes checkpoints (then of the new file too), or not
            make_store(path, checkpoint.CHECKPOINT_BYTES if count else None).compact(
                to_micros(BASE + timedelta(hours=number)) if kind == "metrics"
                else BASE + timedelta(minutes=number))
        elif action == "checkpoint":
            answers(kind, make_store(path, 0))  # a process that reads, then checkpoints
        elif action == "damage checkpoint":
            saved = checkpoint.checkpoint_path(path)
            if saved.exists() and saved.stat().st_size:
                data = bytearray(saved.read_bytes())
                at = number % len(data)
                if count:
                    data[at] ^= 0xFF
                else:
                    del data[at:]
                saved.write_bytes(bytes(data))
        answers(kind, follower)

    saved, aside = checkpoint.checkpoint_path(path), folder / "aside"
    if saved.exists():
        os.replace(saved, aside)
    expected = answers(kind, make_store(path, None))  # read from scratch
    if aside.exists():
        os.replace(aside, saved)
    assert answers(kind, make_store(path, None)) == expected
    assert answers(kind, follower) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_with_a_checkpoint_reads_only_what_follows_it(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_line, make_store = KINDS[kind]
    path = tmp_path / f"{kind}.jsonl"
    append(path, jsonl(make_line(n) for n in range(300)))
    expected_before = answers(kind, make_store(path, 0))
    covered = path.stat().st_size
    assert checkpoint.load(path, CHECKPOINT_KINDS[kind]).position["offset"] == covered
    newer = [{**make_line(n), "task_id" if kind == "metrics" else "id": f"new-{n}"}
             for n in range(300, 330, 3)]  # new tasks (every third task line is whole)
    append(path, jsonl(newer))

    starts = record_chunk_starts(monkeypatch)
    resumed = answers(kind, make_store(path, None))
    assert starts and min(starts) == covered
    monkeypatch.undo()
    assert resumed == answers(kind, make_store(path, None)) != expected_before


def new_tasks(kind: str, first: int, count: int) -> bytes:
    """Lines of tasks of their own (a record each, or a pending task each), which a
    compaction keeps."""
    make_line, _ = KINDS[kind]
    key, whole = ("task_id", 1) if kind == "metrics" else ("id", 3)  # every 3rd task line
    return jsonl({**make_line(n * whole), key: f"new-{n}"} for n in range(first, first + count))


@pytest.mark.parametrize("kind", KINDS)
def test_a_compaction_leaves_the_checkpoint_of_its_new_file(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the processes that were following the old file restore the new one instead of
    each reading it from the start."""
    make_line, make_store = KINDS[kind]
    path = tmp_path / f"{kind}.jsonl"
    append(path, new_tasks(kind, 0, 50_000))  # more than one chunk of a read
    append(path, jsonl(make_line(n) for n in range(300)))
    oldest = (to_micros(BASE + timedelta(hours=20)) if kind == "metrics"
              else BASE + timedelta(minutes=3))
    make_store(path, None).compact(oldest)
    assert not checkpoint.checkpoint_path(path).exists()  # it writes none: not asked to

    follower = make_store(path, None)
    answers(kind, follower)
    append(path, jsonl(make_line(n) for n in range(300, 400)))
    make_store(path, checkpoint.CHECKPOINT_BYTES).compact(oldest)

    found = os.stat(path)
    assert found.st_size > READ_CHUNK_BYTES
    saved = checkpoint.load(path, CHECKPOINT_KINDS[kind])
    assert saved is not None
    assert saved.position["identity"] == [found.st_dev, found.st_ino]
    assert saved.position["offset"] == found.st_size
    starts = record_chunk_starts(monkeypatch)
    followed = answers(kind, follower)
    assert starts == [0]  # the chunk that shows the file was replaced, and no more
    monkeypatch.undo()
    os.unlink(checkpoint.checkpoint_path(path))
    assert followed == answers(kind, make_store(path, None))


@pytest.mark.parametrize("kind", KINDS)
def test_a_compaction_whose_new_file_cannot_be_read_back_still_compacts(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, make_store = KINDS[kind]
    path = tmp_path / f"{kind}.jsonl"
    append(path, new_tasks(kind, 0, 50))
    expected = answers(kind, make_store(path, None))
    store = make_store(path, checkpoint.CHECKPOINT_BYTES)

    def unreadable(follower, *args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(type(store), "refresh", unreadable)
    before = os.stat(path).st_ino
    store.compact(0 if kind == "metrics" else BASE)
    monkeypatch.undo()
    assert os.stat(path).st_ino != before  # the new file took the store's place
    assert not checkpoint.checkpoint_path(path).exists()
    assert answers(kind, make_store(path, None)) == expected
