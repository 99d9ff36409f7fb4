"""make bench, claims mode: POST /tasks/claim at a million tasks with priorities, delays
and caps, on the JSONL store and on PostgreSQL.

Generates (with :func:`bench.bench_tasks.write_task_store`) a task store of the shape the
service writes: 1,000,000 tasks, 10,000 of them pending, priorities from -100 to 100
(most 0), a fifth of the pending tasks delayed (``run_after`` an hour ahead) and a tenth
due after a delay, four models of which two are capped at 2 running tasks by the
routing file's ``limits``, with one cap reached by the tasks already running and the
other one place short of it. Then, in one run: gunicorn (2 workers, that routing file)
serving the store, and ``--claims`` claims over one HTTP connection, each by a runner of
its own and for any task type, then as many for the capped task types only (which find
nothing once the caps are reached). Every answer is checked against a replay of the
queue: the claim takes the eligible task of the highest priority, then the oldest, never
one that is delayed or of a model at its cap. The same claims are measured on a store of
the same size without priorities, delays or caps (today's store: the shape
``bench_tasks`` measures), and both stores are copied with ``copy_stores`` into a
throw-away PostgreSQL cluster and measured there too. Prints one table with the target.

    python -m bench.bench_claims                              # both backends, full size
    python -m bench.bench_claims --tasks 20000 --pending 2000 --backend jsonl
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.clock import isoformat, parse_iso
from bench.bench_postgres import (
    cluster_note,
    copy_folder,
    met,
    percentile,
    positive,
    print_table,
    throwaway_cluster,
    timed,
)
from bench.bench_tasks import PENDING_LIST, start_until_answered, write_task_store
from bench.postgres_server import postgres_bin_dir

MODELS = {"spec": "bench/small", "heal": "bench/small", "impl": "bench/large",
          "test": "bench/capped-a", "review": "bench/capped-b"}
"""The model of each task type (the routing file's entries): four models."""
CAPS = {"bench/capped-a": 2, "bench/capped-b": 2}
"""The routing file's ``limits.models``."""
HELD = {"test": 2, "review": 1}
"""Tasks of these types running under a live lease when the store is written: the cap of
``test``'s model is reached, ``review``'s has one place left for the first claim that
meets one."""
UNCAPPED_TYPES = tuple(task_type for task_type, model in MODELS.items() if model not in CAPS)
CAPPED_TYPES = sorted(task_type for task_type, model in MODELS.items() if model in CAPS)
ZERO_PRIORITY_SHARE = 0.7
"""The other tasks' priorities are spread evenly over -100..100."""
DELAYED_SHARE = 0.2
"""Pending tasks whose ``run_after`` is :data:`DELAY` ahead."""
DUE_SHARE = 0.1
"""Pending tasks whose ``run_after`` passed in the last hour (a retry's backoff over)."""
DELAY = timedelta(hours=1)
MAX_ATTEMPTS = 3
"""What the service writes into a new task by default (``AGENT_MAX_ATTEMPTS``)."""
LEASE_SECONDS = 600
TARGET_MS = 10.0
BACKENDS = {"jsonl": ("JSONL",), "postgresql": ("PostgreSQL",),
            "both": ("JSONL", "PostgreSQL")}
SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class Pending:
    """What a claim looks at in a pending task."""

    id: str
    task_type: str
    model: str
    priority: int
    run_after: datetime | None
    order: int
    """Its place in ``created_at`` (then id) order."""


@dataclass
class Queue:
    """The pending tasks of a generated store and the running tasks of each model:
    passed as ``first_line`` to :func:`~bench.bench_tasks.write_task_store`, it gives
    each task the fields of :meth:`mixed` (unless ``plain``: today's store) and keeps
    what claims depend on."""

    plain: bool
    seed: int = 5
    pending: list[Pending] = field(default_factory=list)
    running: Counter[str] = field(default_factory=Counter)
    caps: dict[str, int] = field(init=False)
    now: datetime = field(init=False)
    """What ``run_after`` is set from."""

    def __post_init__(self) -> None:
        self.caps = {} if self.plain else dict(CAPS)
        self.rng = random.Random(self.seed)
        self.now = datetime.now(timezone.utc)

    def __call__(self, line: dict[str, Any], kind: str) -> dict[str, Any]:
        if not self.plain:
            line = {**line, **self.mixed(line["task_type"], kind)}
        if kind == "pending":
            run_after = line.get("run_after")
            self.pending.append(Pending(
                line["id"], line["task_type"], line["model"], line.get("priority", 0),
                None if run_after is None else parse_iso(run_after), len(self.pending)))
        elif kind == "running":
            self.running[line["model"]] += 1
        return line

    def delayed(self, at: datetime) -> int:
        """Pending tasks whose ``run_after`` is after ``at``."""
        return sum(1 for task in self.pending if task.run_after and task.run_after > at)

    def mixed(self, task_type: str, kind: str) -> dict[str, Any]:
        """The queue fields the service writes into a new task, spread as the module
        says."""
        rng = self.rng
        if kind == "running":
            task_type = self._running_type(task_type)
        priority = 0 if rng.random() < ZERO_PRIORITY_SHARE else rng.randint(-100, 100)
        run_after = None
        if kind == "pending":
            draw = rng.random()
            if draw < DELAYED_SHARE:
                run_after = self.now + DELAY
            elif draw < DELAYED_SHARE + DUE_SHARE:
                run_after = self.now - timedelta(seconds=rng.uniform(1, 3600))
        return {"task_type": task_type, "model": MODELS[task_type], "priority": priority,
                "max_attempts": MAX_ATTEMPTS,
                "run_after": None if run_after is None else isoformat(run_after),
                "rerun_of": None}

    def _running_type(self, task_type: str) -> str:
        """The first running tasks hold the places of :data:`HELD`; the others are of
        uncapped types, so that the caps stand as :data:`HELD` says."""
        for held, count in HELD.items():
            if self.running[MODELS[held]] < count:
                return held
        return task_type if MODELS[task_type] not in CAPS else self.rng.choice(UNCAPPED_TYPES)


@dataclass(frozen=True)
class Claim:
    """One claim as sent and answered."""

    task_types: list[str] | None
    sent_at: datetime
    seconds: float
    status: int
    task: dict[str, Any] | None


def routing_file(folder: Path) -> Path:
    """The routing file: a model for each task type, and the caps."""
    path = folder / "routing.json"
    entries = {task_type: {"model": model} for task_type, model in MODELS.items()}
    path.write_text(json.dumps({**entries, "limits": {"models": CAPS}}, indent=1))
    return path


def write_store(folder: Path, count: int, pending: int, plain: bool) -> tuple[Queue, float]:
    """The store ``folder/tasks.jsonl``; its queue, and the seconds it took to write."""
    folder.mkdir()
    queue = Queue(plain)
    seconds, _ = timed(lambda: write_task_store(folder / "tasks.jsonl", count, 0,
                                                pending=pending, first_line=queue))
    return queue, seconds


class Connection:
    """One keep-alive HTTP connection to the API, with :mod:`http.client`.

    Not ``requests``: a ``requests.Session`` call costs the client about 2 ms of CPU on
    the 2-core machine of bench/README.md, this 0.45 ms, and the client shares those
    cores with the server: each claim measured would carry the difference, and more
    when the machine is busy (see bench/README.md, Claims)."""

    def __init__(self, api: str) -> None:
        url = urlsplit(api)
        self.path = url.path
        self.http = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port,
                                               timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and the JSON answer (None when there is none)."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        self.http.request(method, self.path + path, payload, headers)
        response = self.http.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def close(self) -> None:
        self.http.close()


def run_claims(connection: Connection, count: int, runner: str,
               task_types: list[str] | None = None) -> list[Claim]:
    """``count`` claims one after the other, each by a runner of its own."""
    claims = []
    for number in range(count):
        body: dict[str, Any] = {"runner_id": f"{runner}-{number}",
                                "lease_seconds": LEASE_SECONDS}
        if task_types:
            body["task_types"] = task_types
        sent_at = datetime.now(timezone.utc)
        seconds, (status, answer) = timed(lambda: connection.call("POST", "/tasks/claim",
                                                                  body))
        claims.append(Claim(task_types, sent_at, seconds, status,
                            answer if status == 200 else None))
    return claims


def _due(task: Pending, claim: Claim) -> bool:
    return task.run_after is None or task.run_after <= claim.sent_at


def _room(model: str, running: Counter[str], caps: dict[str, int]) -> bool:
    return model not in caps or running[model] < caps[model]


def _eligible(task: Pending, claim: Claim, running: Counter[str], caps: dict[str, int]
              ) -> bool:
    return ((claim.task_types is None or task.task_type in claim.task_types)
            and _due(task, claim) and _room(task.model, running, caps))


def _wrong_task(taken: Pending | None, expected: Pending | None, claim: Claim,
                running: Counter[str], caps: dict[str, int]) -> str:
    """Why the claim should not have taken ``taken`` (None: no pending task)."""
    if taken is None:
        return "not a pending task"
    if not _due(taken, claim):
        return "delayed"
    if not _room(taken.model, running, caps):
        return "its model is at its cap"
    if expected is None:
        return "not of the claim's task types"
    if taken.priority < expected.priority:
        return "a lower priority"
    return "not the oldest of its priority"


def wrong_claims(queue: Queue, claims: list[Claim]) -> dict[int, str]:
    """Replays ``claims`` on ``queue``, in order: what is wrong with the answers, by the
    claim's number. A claim must take the eligible task (of its task types, not delayed,
    its model under its cap) of the highest priority, then the oldest; 204 when there is
    none."""
    waiting = sorted(queue.pending, key=lambda task: (-task.priority, task.order))
    left = {task.id: task for task in waiting}
    running = Counter(queue.running)
    problems = {}
    for number, claim in enumerate(claims):
        expected = next((task for task in waiting
                         if _eligible(task, claim, running, queue.caps)), None)
        got = claim.task
        if got is None:
            if claim.status != 204 or expected is not None:
                problems[number] = (f"{claim.status}, expected "
                                    f"{'204' if expected is None else expected.id}")
            continue
        taken = left.pop(got["id"], None)
        if taken is None or taken != expected:
            problems[number] = (
                f"took {got['id']} (priority {got.get('priority')}, {got.get('model')}): "
                f"{_wrong_task(taken, expected, claim, running, queue.caps)}; expected "
                f"{'204' if expected is None else expected.id}")
        if taken is not None:
            waiting.remove(taken)
        running[got.get("model", "")] += 1
    return problems


@dataclass(frozen=True)
class Claims:
    """Claims measured, and what was wrong with their answers."""

    claims: list[Claim]
    problems: list[str]

    def ms(self) -> tuple[float, float]:
        """Median and p95, in milliseconds."""
        seconds = [claim.seconds for claim in self.claims]
        return statistics.median(seconds) * 1000, percentile(seconds, 95) * 1000

    def check(self) -> str:
        counted = Counter(claim.status for claim in self.claims)
        statuses = ", ".join(f"{count} x {status}" for status, count in sorted(counted.items()))
        return statuses + (f"; {len(self.problems)} WRONG" if self.problems
                           else "; each as expected")


@dataclass(frozen=True)
class Measured:
    """The claims on one store served by one backend."""

    any_type: Claims
    capped_only: Claims


def measure(logs_dir: Path, env: dict[str, str], queue: Queue, count: int, label: str
            ) -> Measured:
    """Serve ``logs_dir`` with gunicorn (``env`` added) and run the claims: ``count`` for
    any task type, then (if the store has caps) ``count`` for the capped types only."""
    started, server = start_until_answered(logs_dir, PENDING_LIST, env)
    print(f"{label}: gunicorn answered {started:.1f} s after its start; "
          f"{queue.delayed(datetime.now(timezone.utc)):,} pending tasks still delayed",
          flush=True)
    api = f"{server.base_url}/api/agent"
    connection = Connection(api)
    try:
        for _ in range(5):  # the connection, and the worker's first requests
            status, _ = connection.call("GET", PENDING_LIST)
            if status != 200:
                raise RuntimeError(f"{label}: GET {PENDING_LIST} answered {status}")
        claims = run_claims(connection, count, "bench-claim")
        capped_only = run_claims(connection, count, "bench-capped",
                                 CAPPED_TYPES) if queue.caps else []
    finally:
        connection.close()
        server.stop()
    problems = wrong_claims(queue, claims + capped_only)

    def part(taken: list[Claim], first: int) -> Claims:
        numbers = range(first, first + len(taken))
        return Claims(taken, [f"{label}, claim {number}: {problems[number]}"
                              for number in numbers if number in problems])

    return Measured(part(claims, 0), part(capped_only, len(claims)))


def rows_of(backend: str, mixed: Measured, plain: Measured) -> list[tuple[str, ...]]:
    """The table's rows of one backend: the claims on the store with priorities, delays
    and caps, on today's store, their ratio, and the claims of the capped types."""
    median, p95 = mixed.any_type.ms()
    today, today_p95 = plain.any_type.ms()
    rows = [
        (backend, f"claim: priorities, delays, caps ({len(mixed.any_type.claims)})",
         f"{median:.2f} ms / {p95:.2f} ms", f"<= {TARGET_MS:g} ms",
         met(median <= TARGET_MS), mixed.any_type.check()),
        (backend, f"claim: today's store, none of them ({len(plain.any_type.claims)})",
         f"{today:.2f} ms / {today_p95:.2f} ms", "", "", plain.any_type.check()),
        (backend, "medians, with / without", f"{median / today:.2f}x", "", "", ""),
    ]
    if mixed.capped_only.claims:
        capped, capped_p95 = mixed.capped_only.ms()
        rows.append((backend, f"claim of the capped types only "
                     f"({len(mixed.capped_only.claims)})", f"{capped:.2f} ms / "
                     f"{capped_p95:.2f} ms", "", "", mixed.capped_only.check()))
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=positive, default=1_000_000)
    parser.add_argument("--pending", type=positive, default=10_000)
    parser.add_argument("--claims", type=positive, default=200,
                        help="claims measured on each store and backend")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="both")
    args = parser.parse_args(argv)
    if args.pending + args.tasks // 1000 > args.tasks:
        parser.error("--pending leaves no room for the running tasks (0.1%% of --tasks)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the claims benchmark (``argv``: its options, default the command line's)."""
    args = parse_args(argv)
    backends = BACKENDS[args.backend]
    bin_dir = postgres_bin_dir()
    if "PostgreSQL" in backends and bin_dir is None:
        raise SystemExit("bench_claims: PostgreSQL (initdb, pg_ctl) not found; install it "
                         "or measure the JSONL store alone (--backend jsonl)")
    began = time.perf_counter()
    print(f"claims: {args.tasks:,} tasks, {args.pending:,} pending; load average "
          f"{os.getloadavg()[0]:.1f} at start ({os.cpu_count()} CPUs)", flush=True)
    results: dict[str, tuple[Measured, Measured]] = {}
    with ExitStack() as cleanup:
        folder = Path(tempfile.mkdtemp(prefix="bench-claims-"))
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        routing = {"AGENT_ROUTING_FILE": str(routing_file(folder))}
        stores = {}
        for name, plain in (("mixed", False), ("plain", True)):
            queue, seconds = write_store(folder / name, args.tasks, args.pending, plain)
            stores[name] = queue
            size = (folder / name / "tasks.jsonl").stat().st_size / 1e6
            print(f"{name} store: {size:,.0f} MB written in {seconds:.1f} s; pending "
                  f"{len(queue.pending):,} ({queue.delayed(queue.now):,} delayed), running "
                  f"{dict(queue.running)}", flush=True)
        urls = {}
        if "PostgreSQL" in backends:
            assert bin_dir is not None
            _, postgres = throwaway_cluster(cleanup, bin_dir, "bench-claims-postgres-")
            for name in stores:  # before the JSONL servers' claims change the stores
                urls[name] = postgres.create_database(f"claims_{name}")
                copied, vacuumed = copy_folder(folder / name, urls[name], "tasks",
                                               args.tasks, "tasks")
                print(f"{name} store copied into PostgreSQL in {copied:.1f} s "
                      f"({args.tasks / copied:,.0f} tasks/s), VACUUM ANALYZE "
                      f"{vacuumed:.1f} s", flush=True)
            print(cluster_note(urls["mixed"]), flush=True)
        for backend in backends:
            measured = []
            for name, env in (("mixed", routing), ("plain", {})):
                if backend == "PostgreSQL":
                    logs_dir = folder / f"postgres-{name}"
                    logs_dir.mkdir()
                    env = {**env, "AGENT_DATABASE_URL": urls[name]}
                else:
                    logs_dir = folder / name
                measured.append(measure(logs_dir, env, stores[name], args.claims,
                                        f"{backend}, {name} store"))
            results[backend] = (measured[0], measured[1])

    print(f"claims at {args.tasks:,} tasks ({args.pending:,} pending), gunicorn with 2 "
          "workers, one HTTP connection, each claim by a runner of its own")
    rows: list[tuple[str, ...]] = [("backend", "measure (claims)", "median / p95", "target",
                                    "met?", "answers")]
    for backend, (mixed, plain) in results.items():
        rows += rows_of(backend, mixed, plain)
    print_table(rows)
    problems = [problem for mixed, plain in results.values()
                for claims in (mixed.any_type, mixed.capped_only, plain.any_type)
                for problem in claims.problems]
    for problem in problems[:SHOWN_PROBLEMS]:
        print(problem)
    print(f"bench_claims took {time.perf_counter() - began:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} at end")
    if problems:
        raise SystemExit(f"bench_claims: {len(problems)} claims took the wrong task")


if __name__ == "__main__":
    main()
