"""record_task from several processes at once: the store lock as shipped (filelock, polling
every ``LOCK_POLL_SECONDS``) against a bare blocking ``fcntl.flock``, in the same run.

Rounds alternate between the two (the order swapped every other round), each on a new
store, and each checks that no record is lost or doubled. Prints records/s per round,
the median, whether the target is met, and the ratio of the two locks.

    python -m bench.bench_lock                 # or: --rounds 5 --writes 4000
"""
from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from app.services.metrics_service import MetricsService
from app.storage.jsonl import log_writer
from app.storage.jsonl.metrics import JsonlMetricStore

TARGET = 2000
FLOOR = 1500


def _writer(path: str, writer: int, count: int, ready, start, report,
            lock: Callable[[str], Any] | None) -> None:
    if lock is not None:
        log_writer.store_lock = lock
    service = MetricsService(JsonlMetricStore(path))
    service.record_task(f"bench-warmup-{writer}", "impl", "bench/model", 1.0, "completed")
    ready.wait()
    start.wait()
    began = time.perf_counter()
    for n in range(count):
        service.record_task(f"bench-{writer}-{n}", "impl", "bench/model", 1.0, "completed")
    report.put((began, time.perf_counter()))


def measure_writers(path: Path, writers: int, count: int,
                    lock: Callable[[str], Any] | None = None) -> dict:
    """record_task from ``writers`` new processes at once, ``count`` records each; with
    ``lock``, their stores make their lock with it instead of the storage's own."""
    context = multiprocessing.get_context("spawn")
    ready, start, report = context.Barrier(writers + 1), context.Barrier(writers + 1), \
        context.Queue()
    processes = [context.Process(target=_writer,
                                 args=(str(path), w, count, ready, start, report, lock))
                 for w in range(writers)]
    for process in processes:
        process.start()
    ready.wait()
    start.wait()
    spans = [report.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(end for _, end in spans) - min(began for began, _ in spans)
    written: dict[str, int] = {}
    with open(path, "rb") as lines:
        for line in lines:
            if b'"bench-' in line:
                task_id = orjson.loads(line)["task_id"]
                written[task_id] = written.get(task_id, 0) + 1
    expected = {f"bench-{w}-{n}" for w in range(writers) for n in range(count)}
    return {"rate": writers * count / elapsed,
            "lines": sum(written.get(task_id, 0) for task_id in expected),
            "lost": len(expected - written.keys()),
            "doubled": sum(1 for times in written.values() if times > 1)}


class FlockLock:
    """The comparison: an exclusive blocking ``flock`` and nothing more. It keeps one
    descriptor per instance, so it only suits one thread per process, as in this bench."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


MODES: dict[str, Callable[[str], Any] | None] = {
    "filelock (as shipped)": None, "bare fcntl.flock": FlockLock}


def measure_locks(writers: int, count: int, rounds: int) -> dict[str, list[dict]]:
    """measure_writers' results for each mode, one per round."""
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="lock-bench-") as folder:
        for number in range(rounds):
            order = list(MODES) if number % 2 == 0 else list(reversed(MODES))
            for mode in order:
                store = Path(tempfile.mkdtemp(dir=folder), "metrics.jsonl")
                results[mode].append(measure_writers(store, writers, count, MODES[mode]))
    return results


def print_lock_table(results: dict[str, list[dict]], writers: int, count: int) -> None:
    rows = [("mode", "records/s per round", "median", "target", "met", "check")]
    for mode, rounds in results.items():
        rates = [result["rate"] for result in rounds]
        clean = all(result["lost"] == result["doubled"] == 0 and result["lines"] == writers * count
                    for result in rounds)
        met = statistics.median(rates) >= TARGET and min(rates) >= FLOOR and clean
        rows.append((
            mode, " / ".join(f"{rate:,.0f}" for rate in rates),
            f"{statistics.median(rates):,.0f}", f">= {TARGET:,}/s, never < {FLOOR:,}",
            "yes" if met else "no",
            f"lines {sum(r['lines'] for r in rounds):,} of {writers * count * len(rounds):,}, "
            f"lost {sum(r['lost'] for r in rounds)}, doubled {sum(r['doubled'] for r in rounds)}",
        ))
    shipped, bare = ([result["rate"] for result in rounds] for rounds in results.values())
    ratios = [ours / theirs for ours, theirs in zip(shipped, bare)]
    rows.append(("filelock / flock", " / ".join(f"{ratio:.2f}" for ratio in ratios),
                 f"{statistics.median(shipped) / statistics.median(bare):.2f}", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"record_task, {writers} processes at once, {count:,} records each, "
          f"{len(shipped)} alternating rounds")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--writes", type=int, default=2000, help="records per writer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print_lock_table(measure_locks(args.writers, args.writes, args.rounds),
                     args.writers, args.writes)


if __name__ == "__main__":
    main()
