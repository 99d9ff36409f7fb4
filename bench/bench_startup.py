"""make bench, start-up mode: how long gunicorn takes to answer on big stores, with and
without the checkpoints beside them, against a full rescan of the metrics file.

Generates 1,000,000 metric records and 1,000,000 small tasks in one folder, then in one
run: the full rescan of the metrics file (the plain approach), gunicorn's first start
until ``GET /api/agent/metrics`` answers (no checkpoints yet: its master reads both
stores and writes them), and the median of three starts from the checkpoints. Then each
store is compacted (keeping everything), then twice more, by a process that writes no checkpoints
and by one that does: how long the compaction takes, and how long a process that was
following the store takes to read the new file afterwards.

    python -m bench.bench_startup --records 1000000 --tasks 1000000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from app.storage.jsonl.checkpoint import CHECKPOINT_BYTES, CheckpointedStore, checkpoint_path
from app.storage.jsonl.metrics import JsonlMetricStore
from app.storage.jsonl.tasks import JsonlTaskStore
from bench.bench_tasks import start_until_answered, write_task_store
from bench.full_rescan import full_rescan
from bench.store import write_store

METRICS = "/metrics?window_days=7"
KEEP_EVERY_TASK = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _seconds(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def compaction_rows(logs_dir: Path) -> list[tuple[str, ...]]:
    """Per store: a compaction, then a follower's read of the new file, with the
    compaction writing no checkpoint of the new file and then writing one."""
    metrics = logs_dir / "metrics.jsonl"
    stores: dict[str, tuple[Callable[[int | None], CheckpointedStore], Callable]] = {
        "metrics": (lambda every: JsonlMetricStore(metrics, checkpoint_bytes=every),
                    lambda store: store.compact(0)),
        "tasks": (lambda every: JsonlTaskStore(
            logs_dir / "tasks.jsonl", metrics=JsonlMetricStore(metrics),
            checkpoint_bytes=every), lambda store: store.compact(KEEP_EVERY_TASK)),
    }
    rows = []
    for name, (make, compact) in stores.items():
        compact(make(None))  # so both compactions measured start from the same file
        taken = {}
        for every in (None, CHECKPOINT_BYTES):
            follower = make(None)
            follower.refresh()
            compacting = _seconds(lambda: compact(make(every)))
            taken[every] = (compacting, _seconds(follower.refresh))
            follower.close()
        (plain, plain_read), (saving, restored) = taken[None], taken[CHECKPOINT_BYTES]
        rows += [
            (f"{name}: compaction, then a follower's read of the new file, no checkpoint",
             f"{plain:.2f} s + {plain_read:.2f} s", "", ""),
            (f"{name}: the same, the compaction writing the new file's checkpoint",
             f"{saving:.2f} s + {restored:.2f} s", "",
             f"read {restored / plain_read:.2f}x, compaction {saving / plain:.2f}x"),
        ]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as folder:
        logs_dir = Path(folder)
        write_store(logs_dir / "metrics.jsonl", args.records, 14)
        write_task_store(logs_dir / "tasks.jsonl", args.tasks, 0)
        sizes = {name: (logs_dir / name).stat().st_size / 1e6
                 for name in ("metrics.jsonl", "tasks.jsonl")}
        began = time.perf_counter()
        full_rescan(logs_dir / "metrics.jsonl", 7)
        rescan = time.perf_counter() - began
        cold, server = start_until_answered(logs_dir, METRICS)
        server.stop()
        saved = {name: checkpoint_path(logs_dir / name).stat().st_size / 1e6
                 for name in sizes}
        warm = []
        for _ in range(3):
            elapsed, server = start_until_answered(logs_dir, METRICS)
            server.stop()
            warm.append(elapsed)
        compactions = compaction_rows(logs_dir)
    start = statistics.median(warm)
    rows = [
        ("full rescan of the metrics file", f"{rescan:.2f} s", "", ""),
        ("first start to first answer (no checkpoints)", f"{cold:.2f} s", "",
         f"{cold / rescan:.2f}x of the rescan"),
        ("start to first answer from the checkpoints, median of 3",
         f"{start:.2f} s ({' / '.join(f'{w:.2f}' for w in warm)})", "<= 0.2x of the rescan",
         f"{start / rescan:.2f}x of the rescan"),
        *compactions,
    ]
    print(f"start-up: {args.records:,} metric records ({sizes['metrics.jsonl']:,.0f} MB, "
          f"checkpoint {saved['metrics.jsonl']:,.0f} MB) and {args.tasks:,} tasks "
          f"({sizes['tasks.jsonl']:,.0f} MB, checkpoint {saved['tasks.jsonl']:,.0f} MB), "
          "gunicorn with 2 workers")
    header = ("measure", "value", "target", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
