"""Measure GET /api/agent/metrics and record_task at scale, in one run.

Generates a store (default 1,000,000 records over 14 days, half inside the 7-day window),
then measures, on this machine and in this run: a full rescan of the file (the plain
approach), a cold read of the store by a new MetricsService (what a worker does when it
starts after the file was replaced), gunicorn's start (its master reads the store once
before forking), the first GET after it, warm GETs over HTTP, warm scrapes of
``/metrics`` and resident memory per worker, and prints one table with the ratios. Then
the other modes, each with its own table: the usage aggregates and the A/B comparison
(:mod:`bench.bench_usage`), the export against DuckDB's ``COPY ... TO``
(:mod:`bench.bench_export`), record_task from several processes with the store's lock
and with a bare flock (:mod:`bench.bench_lock`), the task store
(:mod:`bench.bench_tasks`), start-up with and without checkpoints
(:mod:`bench.bench_startup`), claims with priorities, delays and caps on both backends
(:mod:`bench.bench_claims`) and PostgreSQL (:mod:`bench.bench_postgres`).

    make bench                      # or: python -m bench.bench_metrics --records 200000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from app.services.metrics_service import MetricsService
from app.storage.jsonl.metrics import JsonlMetricStore
from bench import (
    bench_claims, bench_export, bench_postgres, bench_startup, bench_tasks, bench_usage,
)
from bench.bench_lock import measure_locks, print_lock_table
from bench.full_rescan import full_rescan
from bench.store import write_store
from bench.servers import GunicornServer


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def measure_server(logs_dir: Path, workers: int, window_days: int, requests_count: int) -> dict:
    ready, server = timed(lambda: GunicornServer(
        logs_dir, workers=workers, env={"GUNICORN_CMD_ARGS": "--timeout 300"}).start())
    url = f"{server.base_url}/api/agent/metrics?window_days={window_days}"
    try:
        with ThreadPoolExecutor(workers) as pool:
            firsts = list(pool.map(lambda _: timed(lambda: requests.get(url, timeout=300)),
                                   range(workers)))
        assert all(response.status_code == 200 for _, response in firsts)
        warm = []
        for _ in range(requests_count):
            elapsed, response = timed(lambda: requests.get(url, timeout=30))
            assert response.status_code == 200
            warm.append(elapsed)
        answer = response.json()
        scrapes = []
        for _ in range(requests_count):
            elapsed, response = timed(lambda: requests.get(f"{server.base_url}/metrics",
                                                           timeout=30))
            assert response.status_code == 200
            scrapes.append(elapsed)
        memory = [rss_mb(pid) for pid in server.worker_pids()]
    finally:
        server.stop()
    return {"ready": ready, "first": max(elapsed for elapsed, _ in firsts), "warm": warm,
            "scrapes": scrapes, "rss": memory, "answer": answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--writes", type=int, default=2000, help="records per writer")
    parser.add_argument("--lock-rounds", type=int, default=3,
                        help="rounds of record_task with each lock")
    parser.add_argument("--metrics-only", action="store_true",
                        help="only the metrics table (none of the other modes)")
    parser.add_argument("--skip-postgres", action="store_true",
                        help="skip the PostgreSQL part (bench_postgres; its --pg-* options "
                             "are passed on to it), and bench_claims on PostgreSQL")
    parser.add_argument("--skip-claims", action="store_true",
                        help="skip bench_claims (claims with priorities, delays and caps)")
    args, postgres_args = parser.parse_known_args()

    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as folder:
        logs_dir = Path(folder)
        store = logs_dir / "metrics.jsonl"
        window_edge = args.window_days * 86400
        generated, _ = timed(lambda: write_store(
            store, args.records, args.days, quiet=(window_edge - 3600, window_edge)))
        size_mb = store.stat().st_size / 1e6
        print(f"store: {args.records:,} records over {args.days:g} days, {size_mb:.0f} MB "
              f"(generated in {generated:.1f} s)", flush=True)
        rescan, expected = timed(lambda: full_rescan(store, args.window_days))
        cold, _ = timed(lambda: MetricsService(JsonlMetricStore(
            store, checkpoint_bytes=None)).get_aggregates(args.window_days))
        # No checkpoint yet: the server's master reads the store once (and leaves one).
        server = measure_server(logs_dir, args.workers, args.window_days, args.requests)
        assert server["answer"]["success_rate"] == expected["success_rate"]
        for key in ("by_task_type", "by_model"):  # the rescan's keys (not cost and tokens)
            answer = server["answer"][key]
            assert {name: {field: answer[name][field] for field in entry}
                    for name, entry in expected[key].items()} == expected[key], key
            assert answer.keys() == expected[key].keys(), key
        for key in ("p50_seconds", "p95_seconds"):
            assert server["answer"]["execution_time"][key] == expected["execution_time"][key]

    warm_median = statistics.median(server["warm"])
    warm_p95 = sorted(server["warm"])[int(0.95 * len(server["warm"])) - 1]
    scrape_median = statistics.median(server["scrapes"])
    rows = [
        ("full rescan of the file (plain approach)", f"{rescan:.2f} s", "", ""),
        ("cold read of the store in one process", f"{cold:.2f} s",
         "<= full rescan", f"{cold / rescan:.2f}x of rescan"),
        ("gunicorn start until it answers (reads once)", f"{server['ready']:.2f} s", "", ""),
        ("first GET after start (slowest worker)", f"{server['first'] * 1000:.2f} ms",
         "<= full rescan", f"{server['first'] / rescan:.4f}x of rescan"),
        ("warm GET over HTTP, median", f"{warm_median * 1000:.2f} ms", "<= 10 ms", ""),
        ("warm GET over HTTP, p95", f"{warm_p95 * 1000:.2f} ms", "", ""),
        ("full rescan / warm GET median", f"{rescan / warm_median:,.0f}x", ">= 100x", ""),
        ("warm GET /metrics (Prometheus), median", f"{scrape_median * 1000:.2f} ms",
         "<= 10 ms", f"{scrape_median / warm_median:.2f}x of the warm GET"),
        ("resident memory per worker", " / ".join(f"{mb:.0f}" for mb in server["rss"]) + " MB",
         "<= 150 MB", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"records in window: {expected['success_rate']['total']:,} "
          f"(window_days={args.window_days}); answers match the rescan")
    for row in [("measure", "value", "target", "ratio / check"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    if args.metrics_only:
        return
    print()
    bench_usage.main(["--records", str(args.records)])
    print()
    bench_export.main(["--records", str(args.records)])
    print()
    print_lock_table(measure_locks(args.writers, args.writes, args.lock_rounds),
                     args.writers, args.writes)
    print()
    bench_tasks.main([])
    print()
    bench_startup.main([])
    if not args.skip_claims:
        print()
        bench_claims.main(["--backend", "jsonl"] if args.skip_postgres else [])
    if not args.skip_postgres:
        bench_postgres.main(postgres_args)


if __name__ == "__main__":
    main()
