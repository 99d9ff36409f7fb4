"""make bench, task-store mode: the JSONL task store at scale, served by gunicorn.

Generates a task store of the shape the service writes (a whole first line per task,
then its claim, its final report and its recorded mark, tasks interleaved in blocks),
most tasks final, 1% pending and 0.1% running under a long lease, then measures in one
run: a plain replay of the file (``json.loads`` of every line into whole states, what
the store did before it kept rows), gunicorn's first start (2 workers) until it answers
a pending list, which reads the whole file and leaves a checkpoint, then a second start
from that checkpoint, proportional memory (Pss) per worker, and warm medians of
``GET /tasks?status=pending&limit=20``, ``GET /tasks?limit=20``, ``GET /tasks/<id>`` and
``POST /tasks/claim``. Answers are checked against the generated store.

    python -m bench.bench_tasks --tasks 100000 --output-bytes 16384
    python -m bench.bench_tasks --tasks 1000000 --output-bytes 0
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import requests

from bench.servers import GunicornServer

TASK_TYPES = ("spec", "test", "impl", "review", "heal")
BLOCK = 200
"""Tasks whose lines are interleaved: created together, then claimed, then finished."""


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


FirstLine = Callable[[dict[str, Any], str], dict[str, Any]]
"""Given a generated task's first line and what the task becomes (``"final"``,
``"pending"`` or ``"running"``), the first line to write instead: how a caller gives
tasks other fields (priority, run_after, model, ...) and learns what it gave them."""


def write_task_store(path: Path, count: int, output_bytes: int, seed: int = 11, *,
                     pending: int | None = None, first_line: FirstLine | None = None) -> dict:
    """``count`` tasks created over the last 30 days, in time order: the newest
    ``pending`` (default 1%) pending, the 0.1% created just before them running under a
    lease of a day, the others final. Returns what the store should answer (pending ids
    oldest first, total)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    first = now - timedelta(days=30)
    step = timedelta(days=30) / count
    # Kept as the float bounds they always were, so the default store stays the same.
    first_pending = count * 0.99 if pending is None else count - pending
    first_running = count * 0.989 if pending is None else first_pending - count // 1000
    pending_ids: list[str] = []
    output = ("x" * 63 + "\n") * (output_bytes // 64)
    with open(path, "wb") as out:
        for start in range(0, count, BLOCK):
            block = []
            for n in range(start, min(start + BLOCK, count)):
                created = first + n * step
                block.append((uuid.UUID(int=rng.getrandbits(128)).hex, created,
                              n >= first_pending, first_running <= n < first_pending))
            lines: list[dict[str, Any]] = []
            for task_id, created, waiting, running in block:
                line = {
                    "id": task_id, "direction": f"Write the tests for module {task_id[:6]}",
                    "task_type": TASK_TYPES[int(task_id[:2], 16) % 5], "status": "pending",
                    "model": "cursor/auto", "context": {}, "output": None,
                    "created_at": _stamp(created), "updated_at": _stamp(created),
                    "started_at": None, "duration_seconds": None, "runner_id": None,
                    "lease_expires_at": None, "attempts": 0}
                if first_line is not None:
                    line = first_line(
                        line, "pending" if waiting else "running" if running else "final")
                lines.append(line)
            for task_id, created, waiting, running in block:
                if waiting:
                    pending_ids.append(task_id)
                    continue
                started = created + timedelta(seconds=1)
                lines.append({"id": task_id, "updated_at": _stamp(started),
                              "status": "running", "attempts": 1, "runner_id": "bench-holder",
                              "lease_seconds": 3600, "lease_expires_at": _stamp(
                                  now + timedelta(days=1) if running else started
                                  + timedelta(hours=1)), "started_at": _stamp(started)})
            for task_id, created, waiting, running in block:
                if waiting or running:
                    continue
                ended = created + timedelta(seconds=30)
                lines.append({"id": task_id, "updated_at": _stamp(ended),
                              "status": "completed" if rng.random() > 0.08 else "failed",
                              "output": output, "lease_expires_at": None, "recorded": False,
                              "duration_seconds": 29.0})
                lines.append({"id": task_id, "recorded": True})
            out.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return {"pending": pending_ids, "total": count}


def plain_replay(path: Path) -> int:
    """The plain approach: every line decoded and laid over its task's whole state."""
    latest: dict[str, dict] = {}
    with open(path, "rb") as lines:
        for line in lines:
            record = json.loads(line)
            latest[record["id"]] = {**latest.get(record["id"], {}), **record}
    return len(latest)


PENDING_LIST = "/tasks?status=pending&limit=20&order=oldest"


def start_until_answered(logs_dir: Path, path: str, env: dict[str, str] | None = None
                         ) -> tuple[float, GunicornServer]:
    """Start gunicorn (2 workers) on ``logs_dir`` with ``env`` added to its environment;
    seconds until it answers ``path``."""
    server = GunicornServer(logs_dir, env={"GUNICORN_CMD_ARGS": "--timeout 600", **(env or {})})
    began = time.perf_counter()
    server.start(timeout=600)
    requests.get(f"{server.base_url}/api/agent{path}", timeout=600).raise_for_status()
    return time.perf_counter() - began, server


def pss_mb(pid: int) -> float:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(rollup.split("\nPss:")[1].split()[0]) / 1024


def _median_ms(action: Callable[[], Any], count: int) -> float:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def measure(count: int, output_bytes: int, requests_count: int) -> list[tuple[str, ...]]:
    with tempfile.TemporaryDirectory(prefix="tasks-bench-") as folder:
        logs_dir = Path(folder)
        store = logs_dir / "tasks.jsonl"
        began = time.perf_counter()
        expected = write_task_store(store, count, output_bytes)
        size_mb = store.stat().st_size / 1e6
        print(f"task store: {count:,} tasks, {output_bytes:,}-byte outputs, {size_mb:,.0f} MB "
              f"(generated in {time.perf_counter() - began:.1f} s)", flush=True)
        began = time.perf_counter()
        assert plain_replay(store) == count
        replay = time.perf_counter() - began

        first_start, server = start_until_answered(logs_dir, PENDING_LIST)
        server.stop()  # it left a checkpoint beside the store
        start, server = start_until_answered(logs_dir, PENDING_LIST)
        api = f"{server.base_url}/api/agent"
        session = requests.Session()
        listed = session.get(f"{api}{PENDING_LIST}", timeout=60).json()
        try:
            assert [task["id"] for task in listed["tasks"]] == expected["pending"][:20]
            assert listed["total"] == len(expected["pending"])
            assert session.get(f"{api}/tasks?limit=1", timeout=60).json()["total"] == count
            ids = random.Random(3).sample(expected["pending"], min(requests_count, 100))
            pending_ms = _median_ms(lambda: session.get(
                f"{api}/tasks?status=pending&limit=20", timeout=60).raise_for_status(),
                requests_count)
            newest_ms = _median_ms(lambda: session.get(
                f"{api}/tasks?limit=20", timeout=60).raise_for_status(), requests_count)
            get_ms = _median_ms(lambda: session.get(
                f"{api}/tasks/{random.choice(ids)}", timeout=60).raise_for_status(),
                requests_count)
            claims = iter(range(requests_count))
            claim_ms = _median_ms(lambda: _claim(session, api, next(claims)), requests_count)
            memory = [pss_mb(pid) for pid in sorted(server.worker_pids())]
        finally:
            server.stop()
    label = f"{count:,} tasks, {output_bytes // 1024} KiB outputs ({size_mb:,.0f} MB)"
    return [
        (label, "plain replay of the file (json.loads)", f"{replay:.2f} s", "", ""),
        (label, "first start to first answer (no checkpoint yet)", f"{first_start:.2f} s",
         "", f"{first_start / replay:.2f}x of the plain replay"),
        (label, "start to first answer, from the checkpoint", f"{start:.2f} s", "<= 3 s",
         f"{start / replay:.2f}x of the plain replay"),
        (label, "Pss per worker", " / ".join(f"{mb:.0f}" for mb in memory) + " MB",
         "<= 150 MB", ""),
        (label, "GET /tasks?status=pending&limit=20, median", f"{pending_ms:.2f} ms",
         "<= 10 ms", ""),
        (label, "GET /tasks?limit=20, median", f"{newest_ms:.2f} ms", "", ""),
        (label, "GET /tasks/<id>, median", f"{get_ms:.2f} ms", "<= 5 ms", ""),
        (label, "POST /tasks/claim, median", f"{claim_ms:.2f} ms", "<= 10 ms", ""),
    ]


def _claim(session: requests.Session, api: str, number: int) -> None:
    response = session.post(f"{api}/tasks/claim", json={
        "runner_id": f"bench-runner-{number}", "lease_seconds": 600}, timeout=60)
    assert response.status_code == 200, response.text


def print_task_table(rows: list[tuple[str, ...]]) -> None:
    header = ("store", "measure", "value", "target", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("task store, 2 gunicorn workers, warm medians over one HTTP connection")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, action="append",
                        help="tasks in a run (repeat for several runs; default: 100,000 "
                             "with outputs, then 1,000,000 without)")
    parser.add_argument("--output-bytes", type=int, action="append",
                        help="output bytes per final task, one per --tasks")
    parser.add_argument("--task-requests", type=int, default=200)
    args = parser.parse_args(argv)
    runs = list(zip(args.tasks or [100_000, 1_000_000], args.output_bytes or [16384, 0]))
    rows = [row for count, output in runs for row in measure(count, output, args.task_requests)]
    print_task_table(rows)


if __name__ == "__main__":
    main()
