"""The store lock: one holder at a time across processes and threads, re-entrant within a
thread, never held by a dead process."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.storage.jsonl.log_writer import JsonlLog
from app.storage.stores import StoreUnavailable
from tests.support.processes import spawn
from tests.support import poll

WAIT = 60
BLOCKED = 0.3


def waiter(log: JsonlLog) -> tuple[threading.Thread, threading.Event]:
    """A thread that takes the lock (and lets it go at once); the event says it got it."""
    got = threading.Event()

    def take() -> None:
        with log.locked():
            got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread, got


def _increment(log: JsonlLog, count: int) -> None:
    """Read, add one, write back, under the lock: a count lost means two holders at once."""
    counter = Path(f"{log.path}.count")
    for _ in range(count):
        with log.locked():
            value = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(value + 1))


def _increment_from_threads(path: str, threads: int, count: int) -> None:
    """Threads sharing the process's one JsonlLog of the store, as a server's do."""
    log = JsonlLog(path)
    workers = [threading.Thread(target=_increment, args=(log, count)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_processes_and_their_threads_hold_the_lock_one_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "s.jsonl")
    processes, threads, count = 3, 2, 150
    context = multiprocessing.get_context("spawn")
    started = [context.Process(target=_increment_from_threads, args=(path, threads, count),
                               daemon=True) for _ in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(WAIT * 2)
        assert process.exitcode == 0
    assert int(Path(f"{path}.count").read_text()) == processes * threads * count


@pytest.mark.parametrize("second", [lambda log: log, lambda log: JsonlLog(log.path)],
                         ids=["same JsonlLog", "another JsonlLog"])
def test_a_thread_waits_while_another_thread_holds_the_lock(
    tmp_path: Path, second: Callable[[JsonlLog], JsonlLog]
) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    with log.locked():
        thread, got = waiter(second(log))
        assert not got.wait(BLOCKED)
    assert got.wait(WAIT)
    thread.join(WAIT)


def test_the_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    with log.locked():
        with log.locked():
            log.append([{"n": 1}])
        thread, got = waiter(log)
        assert not got.wait(BLOCKED), "leaving the inner block let the lock go"
        log.append([{"n": 2}])
    assert got.wait(WAIT)
    thread.join(WAIT)
    assert [r for b in poll(log.reader()) for _, r in b.records] == [{"n": 1}, {"n": 2}]


def test_a_waiter_gets_the_lock_when_its_holder_is_killed(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    holder = spawn("hold-lock", str(store))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    thread, got = waiter(JsonlLog(store))
    assert not got.wait(BLOCKED)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=WAIT)
    assert got.wait(WAIT)
    thread.join(WAIT)


def test_a_forked_child_takes_the_lock_of_a_log_opened_before_the_fork(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    log.append([{"n": "parent"}])
    child = os.fork()
    if child == 0:
        status = 1
        try:
            log.append([{"n": "child"}])
            status = 0
        finally:
            os._exit(status)
    assert os.waitpid(child, 0)[1] == 0
    log.append([{"n": "parent again"}])
    assert [r["n"] for b in poll(log.reader()) for _, r in b.records] == [
        "parent", "child", "parent again"]


def test_a_lock_that_cannot_be_taken_makes_the_store_unavailable(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    (tmp_path / "s.jsonl.lock").mkdir()
    with pytest.raises(StoreUnavailable, match="cannot lock"):
        log.append([{"n": 1}])
