"""Measure the PostgreSQL backend at scale: GET /api/agent/metrics and the task pipeline.

Starts a throw-away PostgreSQL cluster (bench/postgres_server.py, tuned for speed:
fsync and full_page_writes are off, so the cost of durability is not measured), loads
the metric records (default 1,000,000 over 14 days, half inside the 7-day window) with
``copy_stores`` as ``flask store copy`` does (which ends with ``ANALYZE``; no other
``ANALYZE`` or ``VACUUM`` follows), then measures, on this machine and in this run, right
after the copy: the plain approach (the SQL aggregate on every request), the first read
of the whole table in one process (the way it is read now, and the way it was read
before: every row as a tuple), a gunicorn server's start until its first metrics
answer, warm GETs over HTTP (their answer checked against the SQL one), and the
end-to-end throughput of 3 API servers and 4 runners sharing the database, with the
latency of a claim that finds nothing, probed meanwhile. Prints one table with the
targets.

    python -m bench.bench_postgres                  # or: --pg-records 200000
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import requests

from app.storage.metric_columns import RecordColumns
from app.storage.postgres import PostgresDatabase
from app.storage.postgres.database import only_row
from app.storage.postgres.column_read import read_columns
from app.storage.postgres.metrics import RECORD_COLUMNS, record_batch
from app.storage.store_copy import copy_stores
from bench.store import write_store
from bench.postgres_server import SETTINGS, PostgresServer, postgres_bin_dir
from bench.servers import RUNNER, GunicornServer, runner_env, stop_process

T = TypeVar("T")
METRICS_PATH = "/api/agent/metrics"
CLAIM_PATH = "/api/agent/tasks/claim"
WORK_TYPES = ("spec", "test", "impl", "review")
PROBE_TYPE = "heal"
"""No task has this type: the probe's claims take nothing (204) and disturb no runner."""
ROUTING = {task_type: {"model": "bench/true", "command": ["true"]} for task_type in WORK_TYPES}
RUNNER_PROBE_LINE = "GET /api/agent/tasks?limit=1"
"""What a runner asks first (its check that the API answers), as the access log shows it."""
START_TARGET_SECONDS = 3.0
WARM_TARGET_MS = 5.0
RATIO_TARGET = 30.0
PIPELINE_TIMEOUT_SECONDS = 300.0
RUNNER_INTERVAL = "0.2"
"""Seconds an idle runner worker waits between claims."""
CREATORS = 4
"""Clients creating the tasks at once."""

WINDOW = "created_at >= now() - %(days)s * interval '1 day' AND created_at <= now()"
TOTALS_SQL = f"""
    SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
           count(*) FILTER (WHERE status = 'failed'),
           percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_seconds)
    FROM metric_records WHERE {WINDOW}"""
BY_TYPE_SQL = f"""
    SELECT task_type, count(*), count(*) FILTER (WHERE status = 'completed'),
           count(*) FILTER (WHERE status = 'failed')
    FROM metric_records WHERE {WINDOW} GROUP BY task_type"""
BY_MODEL_SQL = f"""
    SELECT model, count(*), avg(duration_seconds)
    FROM metric_records WHERE {WINDOW} GROUP BY model"""


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``action()`` took, and what it returned."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1]


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-records", type=int, default=1_000_000)
    parser.add_argument("--pg-days", type=float, default=14)
    parser.add_argument("--pg-window-days", type=int, default=7)
    parser.add_argument("--pg-usage-share", type=float, default=0.5,
                        help="share of the records that carry usage (tokens, wait, cost, "
                             "prompt variant)")
    parser.add_argument("--pg-reads", type=positive, default=3,
                        help="first reads of the table timed in one process, each way "
                             "(the median is reported)")
    parser.add_argument("--pg-sql-runs", type=int, default=10,
                        help="runs of the plain SQL aggregate (the median is reported)")
    parser.add_argument("--pg-starts", type=positive, default=3,
                        help="server starts timed (the median is reported)")
    parser.add_argument("--pg-requests", type=int, default=200, help="warm GETs")
    parser.add_argument("--pg-servers", type=int, default=3)
    parser.add_argument("--pg-server-workers", type=int, default=2)
    parser.add_argument("--pg-runners", type=int, default=4)
    parser.add_argument("--pg-runner-workers", type=int, default=2,
                        help="tasks each runner runs at once")
    parser.add_argument("--pg-tasks", type=int, default=2000)
    parser.add_argument("--pg-probe-interval", type=float, default=0.05,
                        help="seconds between the probe's claims")
    parser.add_argument("--pg-skip-pipeline", action="store_true",
                        help="stop after the warm GETs (no pipeline, no claim probe)")
    return parser.parse_args(argv)


def throwaway_cluster(cleanup: ExitStack, bin_dir: Path, prefix: str
                      ) -> tuple[Path, PostgresServer]:
    """A new folder holding a PostgreSQL cluster of its own, started; both go when
    ``cleanup`` closes."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
    folder.chmod(0o755)  # PostgreSQL may run as another user (when this runs as root)
    return folder, cleanup.enter_context(PostgresServer(bin_dir, parent=folder))


def cluster_note(url: str) -> str:
    """The server's version and what makes the cluster unlike a production one."""
    with psycopg.connect(url) as conn:
        version, = conn.execute("SHOW server_version").fetchone()
    settings = ", ".join(f"{name}={SETTINGS[name]}" for name in ("fsync", "full_page_writes"))
    return (f"PostgreSQL {version}, a throw-away cluster with {settings}: "
            "durability is not measured")


def copy_folder(source: Path, url: str, store: str, count: int, table: str | None = None
                ) -> tuple[float, float]:
    """``copy_stores`` of the folder ``source`` into the database at ``url`` (what
    ``flask store copy`` runs, ending with ``ANALYZE`` of the tables it copied into),
    which must copy ``count`` rows of ``store``, then, if ``table`` is given, VACUUM
    ANALYZE it (the state a table reaches once autovacuum has been by); seconds of each
    (0 for no VACUUM)."""
    database = PostgresDatabase(url)
    try:
        copied, counts = timed(lambda: copy_stores(source, database))
    finally:
        database.close()
    if counts.copied.get(store) != count:
        raise RuntimeError(f"copy_stores copied {counts.summary()}, expected {count} {store}")
    if table is None:
        return copied, 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        vacuumed, _ = timed(lambda: conn.execute(f"VACUUM ANALYZE {table}"))
    return copied, vacuumed


def load_records(folder: Path, url: str, count: int, days: float,
                 window_days: int, usage_share: float) -> dict[str, float]:
    """Generate the records into a JSONL file and copy them in; seconds per step."""
    source = folder / "load"
    source.mkdir()
    window_edge = window_days * 86400
    generated, _ = timed(lambda: write_store(source / "metrics.jsonl", count, days,
                                             quiet=(window_edge - 3600, window_edge),
                                             usage_share=usage_share))
    copied, _ = copy_folder(source, url, "metrics", count)  # and nothing else: no VACUUM
    shutil.rmtree(source)
    return {"generated": generated, "copied": copied}


def first_read(url: str, how: str) -> int:
    """One first read of the whole table in this process, as a server's store does it
    (``how``: ``columns``, now) or did before (``rows``: every row as a tuple, then
    ``record_batch``); the records read."""
    database = PostgresDatabase(url)
    try:
        with database.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if how == "columns":
                horizon, = only_row(conn.execute(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
                return read_columns(conn, horizon).columns.size
            rows = conn.execute(f"SELECT {RECORD_COLUMNS} FROM metric_records ORDER BY seq",
                                binary=True).fetchall()
            columns = RecordColumns()
            columns.add(record_batch(rows))
            return columns.size
    finally:
        database.close()


def measure_first_reads(url: str, count: int, reads: int) -> dict[str, list[float]]:
    """Seconds of ``reads`` first reads each way, alternating."""
    seconds: dict[str, list[float]] = {"columns": [], "rows": []}
    for _ in range(reads):
        for how in seconds:
            elapsed, size = timed(lambda: first_read(url, how))
            if size != count:
                raise RuntimeError(f"a first read ({how}) found {size} records, not {count}")
            seconds[how].append(elapsed)
    return seconds


def sql_aggregate(conn: psycopg.Connection, window_days: int) -> dict[str, Any]:
    """The plain approach: the window's aggregates computed by the database, in one
    snapshot."""
    params = {"days": window_days}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        total, completed, failed, (p50, p95) = conn.execute(TOTALS_SQL, params).fetchone()
        by_type = {name: (count, done, lost) for name, count, done, lost
                   in conn.execute(BY_TYPE_SQL, params)}
        by_model = {name: (count, average) for name, count, average
                    in conn.execute(BY_MODEL_SQL, params)}
    return {"total": total, "completed": completed, "failed": failed, "p50": p50, "p95": p95,
            "by_task_type": by_type, "by_model": by_model}


def mismatches(answer: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Where the API's answer differs from the SQL aggregate, beyond the API's rounding
    (percentiles to the microsecond, average durations to 0.1 s)."""
    found = []
    rate = answer["success_rate"]
    for key in ("total", "completed", "failed"):
        if rate[key] != expected[key]:
            found.append(f"{key}: API {rate[key]}, SQL {expected[key]}")
    for key in ("p50", "p95"):
        value = answer["execution_time"][f"{key}_seconds"]
        if abs(value - expected[key]) > 1e-6:
            found.append(f"{key}: API {value}, SQL {expected[key]}")
    types = {name: (entry["count"], entry["completed"], entry["failed"])
             for name, entry in answer["by_task_type"].items()}
    if types != expected["by_task_type"]:
        found.append(f"by_task_type: API {types}, SQL {expected['by_task_type']}")
    models = answer["by_model"]
    if models.keys() != expected["by_model"].keys():
        found.append(f"models: API {sorted(models)}, SQL {sorted(expected['by_model'])}")
    for name, (count, average) in expected["by_model"].items():
        entry = models.get(name, {"count": None, "avg_duration": None})
        if entry["count"] != count or abs(entry["avg_duration"] - average) > 0.05 + 1e-9:
            found.append(f"model {name}: API {entry}, SQL count {count} avg {average}")
    return found


def new_server(logs_dir: Path, env: dict[str, str], workers: int,
               cleanup: ExitStack) -> GunicornServer:
    """A gunicorn server (not started yet), stopped when ``cleanup`` closes."""
    logs_dir.mkdir()
    server = GunicornServer(logs_dir, workers=workers,
                            env={**env, "GUNICORN_CMD_ARGS": "--timeout 300"})
    cleanup.callback(server.stop)
    return server


def measure_start(server: GunicornServer, window_days: int) -> tuple[float, float]:
    """Seconds from starting gunicorn to its first answer (its master reads the records
    before it forks), then seconds of the first metrics GET."""
    ready, _ = timed(server.start)
    first, response = timed(lambda: requests.get(
        f"{server.base_url}{METRICS_PATH}?window_days={window_days}", timeout=300))
    if response.status_code != 200:
        raise RuntimeError(f"first GET {METRICS_PATH}: {response.status_code} {response.text}")
    return ready, first


def measure_warm(server: GunicornServer, session: requests.Session, window_days: int,
                 count: int) -> tuple[list[float], dict[str, Any]]:
    """Sequential GETs on one connection: their durations and the last answer."""
    url = f"{server.base_url}{METRICS_PATH}?window_days={window_days}"
    durations = []
    for _ in range(count):
        elapsed, response = timed(lambda: session.get(url, timeout=30))
        if response.status_code != 200:
            raise RuntimeError(f"GET {METRICS_PATH}: {response.status_code} {response.text}")
        durations.append(elapsed)
    return durations, response.json()


def _probe(base_urls: list[str], interval: float, ready: Any, stop: Any,
           results: Any) -> None:
    """Claim nothing, every ``interval`` seconds, from each server in turn: once on each
    to connect, then sets ``ready`` and claims until ``stop`` is set (at least once);
    puts the (seconds, status) of each of those claims in ``results``."""
    sessions = [requests.Session() for _ in base_urls]
    body = {"runner_id": "bench-probe", "task_types": [PROBE_TYPE]}

    def claim(n: int) -> tuple[float, int]:
        elapsed, response = timed(lambda: sessions[n].post(
            f"{base_urls[n]}{CLAIM_PATH}", json=body, timeout=30))
        return elapsed, response.status_code

    for n in range(len(base_urls)):
        claim(n)
    ready.set()
    claims = []
    next_at = time.perf_counter()
    while True:
        claims.append(claim(len(claims) % len(base_urls)))
        next_at += interval
        if stop.wait(max(next_at - time.perf_counter(), 0)):
            break
    results.put(claims)


def _wait_for_runners(servers: list[GunicornServer], runners: list[subprocess.Popen],
                      logs: list[Path]) -> None:
    """Until every runner has checked that its API answers (it claims right after)."""
    deadline = time.monotonic() + 60
    while sum(server.log_path.read_text(errors="replace").count(RUNNER_PROBE_LINE)
              for server in servers) < len(runners):
        if time.monotonic() > deadline or any(r.poll() is not None for r in runners):
            raise RuntimeError("runners did not start:\n" + _tails(logs))
        time.sleep(0.05)


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log} ---\n" + "\n".join(
        log.read_text(errors="replace").splitlines()[-10:]) for log in logs if log.exists())


def _create_tasks(base_urls: list[str], count: int) -> list[str]:
    """``count`` tasks, created by :data:`CREATORS` clients at once, each server taking its
    turn; their ids."""
    sessions = [requests.Session() for _ in range(CREATORS)]

    def create(n: int) -> str:
        response = sessions[n % CREATORS].post(
            f"{base_urls[n % len(base_urls)]}/api/agent/tasks",
            json={"direction": f"bench task {n}", "task_type": WORK_TYPES[n % len(WORK_TYPES)]},
            timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"creating a task: {response.status_code} {response.text}")
        return response.json()["id"]

    with ThreadPoolExecutor(CREATORS) as pool:
        return list(pool.map(create, range(count)))


def measure_pipeline(folder: Path, url: str, servers: list[GunicornServer],
                     args: argparse.Namespace, cleanup: ExitStack) -> dict[str, Any]:
    """Runners claim, run and report ``args.pg_tasks`` tasks created through the servers
    while a probe claims nothing every ``args.pg_probe_interval`` seconds."""
    base_urls = [server.base_url for server in servers]
    runners, logs = [], []
    for number in range(args.pg_runners):
        log = folder / f"runner-{number}.out"
        env = runner_env(base_urls[number % len(servers)], folder,
                         AGENT_RUNNER_DIR=str(folder / f"runner-{number}"),
                         AGENT_WORKDIR=str(folder), AGENT_ALLOW_PROGRAMS="true")
        with open(log, "wb") as out:
            runner = subprocess.Popen(
                [sys.executable, str(RUNNER), "--workers", str(args.pg_runner_workers),
                 "--interval", RUNNER_INTERVAL], env=env, cwd=folder, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT)
        cleanup.callback(stop_process, runner, 15)
        runners.append(runner)
        logs.append(log)
    _wait_for_runners(servers, runners, logs)

    with psycopg.connect(url, autocommit=True) as conn:
        records_before, last_seq = conn.execute(
            "SELECT count(*), coalesce(max(seq), 0) FROM metric_records").fetchone()
        context = multiprocessing.get_context("spawn")
        ready, stop, results = context.Event(), context.Event(), context.Queue()
        probe = context.Process(target=_probe, args=(
            base_urls, args.pg_probe_interval, ready, stop, results))
        probe.start()
        cleanup.callback(probe.kill)
        if not ready.wait(60):
            raise RuntimeError("the claim probe did not start")
        started = time.perf_counter()
        task_ids = _create_tasks(base_urls, args.pg_tasks)
        deadline = time.monotonic() + PIPELINE_TIMEOUT_SECONDS
        while conn.execute("SELECT count(*) FROM metric_records WHERE seq > %s",
                           (last_seq,)).fetchone()[0] < args.pg_tasks:
            if time.monotonic() > deadline or any(r.poll() is not None for r in runners):
                raise RuntimeError("the tasks were not all recorded:\n" + _tails(logs))
            time.sleep(0.02)
        observed = time.perf_counter() - started
        stop.set()
        claims = results.get(timeout=60)
        probe.join(timeout=30)
        span, = conn.execute(
            """SELECT extract(epoch FROM max(created_at) - (SELECT min(created_at) FROM tasks))
               FROM metric_records WHERE seq > %s""", (last_seq,)).fetchone()
        records_after, = conn.execute("SELECT count(*) FROM metric_records").fetchone()
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks WHERE id = ANY(%s) "
                                     "GROUP BY status", (task_ids,)).fetchall())
    return {"span": float(span), "observed": observed, "added": records_after - records_before,
            "statuses": statuses, "claims": claims}


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of cells (the first row the header), in columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def met(condition: bool) -> str:
    return "yes" if condition else "NO"


def main(argv: list[str] | None = None) -> None:
    """Run the PostgreSQL benchmark (``argv``: its options, default the command line's)."""
    args = parse_args(argv)
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("bench_postgres: PostgreSQL (initdb, pg_ctl) not found; install it "
                         "or skip this part (bench_metrics --skip-postgres)")
    began = time.perf_counter()
    with ExitStack() as cleanup:
        folder, postgres = throwaway_cluster(cleanup, bin_dir, "bench-postgres-")
        url = postgres.create_database("agent_bench")
        print(f"{cluster_note(url)}; load average {os.getloadavg()[0]:.1f} at start "
              f"({os.cpu_count()} CPUs)", flush=True)

        load = load_records(folder, url, args.pg_records, args.pg_days, args.pg_window_days,
                            args.pg_usage_share)
        print(f"loaded {args.pg_records:,} records over {args.pg_days:g} days "
              f"({args.pg_usage_share:.0%} with usage): generated in "
              f"{load['generated']:.1f} s, copy_stores (ending with its ANALYZE) "
              f"{load['copied']:.1f} s; no VACUUM, no other ANALYZE", flush=True)

        # Right after the copy: a server's start, then the warm GETs on it.
        env = {"AGENT_DATABASE_URL": url, "AGENT_ROUTING_FILE": str(folder / "routing.json")}
        (folder / "routing.json").write_text(json.dumps(ROUTING))
        server = new_server(folder / "start-0", env, args.pg_server_workers, cleanup)
        starts = [measure_start(server, args.pg_window_days)]
        warm, answer = measure_warm(server, requests.Session(), args.pg_window_days,
                                    args.pg_requests)
        print(f"right after the copy: start to first answer {sum(starts[0]):.2f} s, warm GET "
              f"median {statistics.median(warm) * 1000:.2f} ms; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)

        with psycopg.connect(url, autocommit=True) as conn:
            sql_runs = [timed(lambda: sql_aggregate(conn, args.pg_window_days))
                        for _ in range(args.pg_sql_runs)]
        expected = sql_runs[-1][1]
        sql_median = statistics.median(elapsed for elapsed, _ in sql_runs)
        wrong = mismatches(answer, expected)
        if wrong:
            raise RuntimeError("the API's answer differs from the SQL aggregate: "
                               + "; ".join(wrong))

        server.stop()
        reads = measure_first_reads(url, args.pg_records, args.pg_reads)
        for attempt in range(1, args.pg_starts):
            server = new_server(folder / f"start-{attempt}", env, args.pg_server_workers,
                                cleanup)
            starts.append(measure_start(server, args.pg_window_days))
            if attempt < args.pg_starts - 1:
                server.stop()
        if args.pg_starts == 1:
            server = new_server(folder / "start-1", env, args.pg_server_workers,
                                cleanup).start()
        warm_later, _ = measure_warm(server, requests.Session(), args.pg_window_days,
                                     args.pg_requests)
        pipeline = None
        if not args.pg_skip_pipeline:
            servers = [server, *(
                new_server(folder / f"server-{n}", env, args.pg_server_workers, cleanup).start()
                for n in range(1, args.pg_servers))]
            pipeline = measure_pipeline(folder, url, servers, args, cleanup)
    elapsed = time.perf_counter() - began

    warm_median = statistics.median(warm)
    ready = statistics.median(ready for ready, _ in starts)
    first = statistics.median(first for _, first in starts)
    totals = sorted(ready + first for ready, first in starts)
    start_total = statistics.median(totals)
    read_new, read_old = (statistics.median(reads[how]) for how in ("columns", "rows"))
    ratio = sql_median / warm_median
    rows: list[tuple[str, ...]] = [
        ("measure", "value", "target", "met? / check"),
        (f"copy_stores of {args.pg_records:,} records ({args.pg_usage_share:.0%} with usage), "
         "ending with ANALYZE", f"{load['copied']:.1f} s "
         f"({args.pg_records / load['copied']:,.0f} records/s)", "", ""),
        ("first server start to first metrics answer, right after the copy",
         f"{sum(starts[0]):.2f} s", f"<= {START_TARGET_SECONDS:g} s",
         met(sum(starts[0]) <= START_TARGET_SECONDS)),
        (f"warm GET over HTTP right after the copy, median of {len(warm)}",
         f"{warm_median * 1000:.2f} ms", f"<= {WARM_TARGET_MS:g} ms",
         met(warm_median * 1000 <= WARM_TARGET_MS)),
        ("warm GET right after the copy, p95", f"{percentile(warm, 95) * 1000:.2f} ms", "", ""),
        (f"plain SQL aggregate, median of {args.pg_sql_runs}", f"{sql_median * 1000:.1f} ms",
         "", "the API's answer matches it"),
        ("plain SQL / warm GET median", f"{ratio:,.0f}x", f">= {RATIO_TARGET:g}x",
         met(ratio >= RATIO_TARGET)),
        (f"first read of the table in one process, now (columns), median of {args.pg_reads}",
         f"{read_new:.2f} s", "", ""),
        (f"the same, as before (every row as a tuple), median of {args.pg_reads}",
         f"{read_old:.2f} s ({read_old / read_new:.1f}x)", "", ""),
        (f"gunicorn start until it answers, median of {len(starts)}", f"{ready:.2f} s", "",
         ""),
        ("first GET /api/agent/metrics after that, median", f"{first * 1000:.1f} ms", "", ""),
        (f"server start to first metrics answer, median of {len(starts)}",
         f"{start_total:.2f} s ({totals[0]:.2f} to {totals[-1]:.2f})",
         f"<= {START_TARGET_SECONDS:g} s", met(start_total <= START_TARGET_SECONDS)),
        (f"warm GET over HTTP on the last server, median of {len(warm_later)}",
         f"{statistics.median(warm_later) * 1000:.2f} ms", f"<= {WARM_TARGET_MS:g} ms",
         met(statistics.median(warm_later) * 1000 <= WARM_TARGET_MS)),
    ]
    print(f"records in window: {expected['total']:,} (window_days={args.pg_window_days}); "
          "the API's answer matches the SQL aggregate")
    print("first reads (s): now " + ", ".join(f"{x:.2f}" for x in reads["columns"])
          + "; before " + ", ".join(f"{x:.2f}" for x in reads["rows"]))
    if pipeline is not None:
        claims = [seconds for seconds, _ in pipeline["claims"]]
        refused = sum(1 for _, status in pipeline["claims"] if status != 204)
        recorded = (pipeline["statuses"] == {"completed": args.pg_tasks}
                    and pipeline["added"] == args.pg_tasks)
        rate = args.pg_tasks / pipeline["span"]
        runners = f"{args.pg_runners} runners x {args.pg_runner_workers}"
        rows += [
            (f"tasks end to end ({args.pg_servers} servers x {args.pg_server_workers}, "
             f"{runners})", f"{rate:,.1f} tasks/s", "",
             "all completed, recorded once" if recorded else "NOT all completed and recorded"),
            (f"empty claim under load, median of {len(claims)}",
             f"{statistics.median(claims) * 1000:.1f} ms", "",
             "all 204" if refused == 0 else f"{refused} not 204"),
            ("empty claim under load, p95", f"{percentile(claims, 95) * 1000:.1f} ms", "", ""),
            ("empty claim under load, max", f"{max(claims) * 1000:.1f} ms", "", ""),
        ]
        print(f"pipeline: {args.pg_tasks:,} tasks in {pipeline['span']:.1f} s from first "
              f"create to last record (seen after {pipeline['observed']:.1f} s); task states "
              f"{pipeline['statuses']}; metric records +{pipeline['added']:,}")
    print_table(rows)
    print(f"bench_postgres took {elapsed:.0f} s; load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
