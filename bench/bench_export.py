"""Measure the raw-records export against DuckDB writing the same records, in one run.

Generates a store (default 1,000,000 records over 14 days, half of them with usage),
serves it with gunicorn and streams the whole body of
``GET /api/agent/metrics/records?format=csv`` and ``?format=jsonl`` (each several times,
medians), then has DuckDB write the same file as CSV and as JSON with
``COPY (SELECT * FROM read_json_auto(...)) TO ...``; the CSV export is also timed in
one process, without HTTP. Prints each median, the ratio to
DuckDB's and the target (CSV export at most 3x DuckDB's ``COPY ... TO``), with the load
average before and after. DuckDB is a benchmark dependency only (requirements-dev.txt).

    python -m bench.bench_export --records 200000
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from app.services import record_export
from app.services.metrics_service import MetricsService
from app.storage.jsonl.metrics import JsonlMetricStore
from bench.servers import GunicornServer
from bench.store import write_store

TARGET_RATIO = 3.0


def stream_seconds(url: str) -> tuple[float, int]:
    """Seconds to stream the whole body of a GET, and its size in bytes."""
    started = time.perf_counter()
    size = 0
    with requests.get(url, stream=True, timeout=600) as response:
        assert response.status_code == 200, response.text
        for piece in response.iter_content(chunk_size=1 << 20):
            size += len(piece)
    return time.perf_counter() - started, size


def in_process_seconds(store: Path, file_format: str) -> float:
    """Seconds to produce the whole export in this process (no HTTP)."""
    metrics = MetricsService(JsonlMetricStore(store, checkpoint_bytes=None))
    started = time.perf_counter()
    for _ in record_export.export(metrics, file_format):
        pass
    return time.perf_counter() - started


def duckdb_seconds(store: Path, out: Path, options: str) -> float:
    import duckdb  # a benchmark dependency only

    started = time.perf_counter()
    with duckdb.connect() as conn:
        conn.execute(f"COPY (SELECT * FROM read_json_auto('{store}')) TO '{out}' ({options})")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, medians")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="export-bench-") as folder:
        logs_dir = Path(folder)
        store = logs_dir / "metrics.jsonl"
        write_store(store, args.records, args.days, usage_share=0.5)
        load_before = os.getloadavg()
        server = GunicornServer(logs_dir, env={"GUNICORN_CMD_ARGS": "--timeout 600"}).start(
            timeout=300)
        times: dict[str, list[float]] = {"csv": [], "jsonl": [], "duck_csv": [],
                                         "duck_json": [], "csv_here": []}
        sizes: dict[str, int] = {}
        try:
            url = f"{server.base_url}/api/agent/metrics/records?format="
            for _ in range(args.rounds):  # interleaved, so a change of load hits all alike
                for file_format in ("csv", "jsonl"):
                    elapsed, sizes[file_format] = stream_seconds(url + file_format)
                    times[file_format].append(elapsed)
                times["csv_here"].append(in_process_seconds(store, "csv"))
                times["duck_csv"].append(duckdb_seconds(store, logs_dir / "duck.csv", "HEADER"))
                times["duck_json"].append(
                    duckdb_seconds(store, logs_dir / "duck.json", "FORMAT JSON"))
        finally:
            server.stop()
        load_after = os.getloadavg()
        store_mb = store.stat().st_size / 1e6

    median = {name: statistics.median(values) for name, values in times.items()}
    csv_ratio = median["csv"] / median["duck_csv"]
    rows = [
        ("CSV export over HTTP (gunicorn, whole body)", f"{median['csv']:.2f} s",
         f"{csv_ratio:.2f}x of DuckDB CSV", f"<= {TARGET_RATIO:g}x",
         "met" if csv_ratio <= TARGET_RATIO else "NOT met"),
        ("CSV export in one process (no HTTP)", f"{median['csv_here']:.2f} s",
         f"{median['csv_here'] / median['duck_csv']:.2f}x of DuckDB CSV", "", ""),
        ("DuckDB COPY ... TO csv", f"{median['duck_csv']:.2f} s", "", "", ""),
        ("JSONL export over HTTP (gunicorn, whole body)", f"{median['jsonl']:.2f} s",
         f"{median['jsonl'] / median['duck_json']:.2f}x of DuckDB JSON", "", ""),
        ("DuckDB COPY ... TO json", f"{median['duck_json']:.2f} s", "", "", ""),
    ]
    print(f"export: {args.records:,} records over {args.days:g} days, half with usage, "
          f"{store_mb:.0f} MB; CSV {sizes['csv'] / 1e6:.0f} MB, JSONL "
          f"{sizes['jsonl'] / 1e6:.0f} MB; medians of {args.rounds}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} cores)")
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in [("measure", "median", "ratio", "target", ""), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
