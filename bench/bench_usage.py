"""Measure the usage aggregates and the A/B comparison at scale, in one run.

Generates two stores of the same size (default 1,000,000 records over 14 days): one
where half of the records carry usage (tokens, queue wait, three prompt variants, a cost
for 80% of them) and one without any. Serves each with gunicorn and measures warm
``GET /api/agent/metrics`` (the ratio of the two is printed), warm
``GET /api/agent/metrics/compare`` on the store with usage, and resident memory per
worker (before and after comparing: scipy is loaded by the first comparison). The usage
totals and the arms' sizes are checked against a plain
pass over the file.

    python -m bench.bench_usage --records 200000
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from bench.servers import GunicornServer
from bench.store import PROMPT_VARIANTS, write_store

COMPARE = f"/api/agent/metrics/compare?by=prompt_variant&a={PROMPT_VARIANTS[0]}" \
          f"&b={PROMPT_VARIANTS[1]}"


def plain_usage(path: Path, window_days: int) -> dict:
    """Token and cost totals and arm sizes of the window, from ``json.loads`` per line."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=window_days)
    totals = {"tasks_with_usage": 0, "input_tokens": 0, "cost_nanos": 0}
    arms = dict.fromkeys(PROMPT_VARIANTS[:2], 0)
    with open(path, "rb") as lines:
        for line in lines:
            record = json.loads(line)
            if datetime.fromisoformat(record["created_at"]) < cutoff:
                continue
            if "input_tokens" in record:
                totals["tasks_with_usage"] += 1
                totals["input_tokens"] += record["input_tokens"]
                totals["cost_nanos"] += round(record.get("cost_usd", 0) * 1e9)
            if record.get("prompt_variant") in arms:
                arms[record["prompt_variant"]] += 1
    return {"totals": totals, "arms": arms}


def medians(url: str, count: int) -> tuple[float, float, requests.Response]:
    """Median and p95 seconds of ``count`` warm GETs (after one), each on a new
    connection, and the last response."""
    session_free = []
    response = requests.get(url, timeout=300)
    for _ in range(count):
        started = time.perf_counter()
        response = requests.get(url, timeout=60)
        session_free.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    ordered = sorted(session_free)
    return statistics.median(ordered), ordered[int(0.95 * len(ordered)) - 1], response


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def serve(folder: Path, window_days: int, requests_count: int, compare: bool) -> dict:
    server = GunicornServer(folder, env={"GUNICORN_CMD_ARGS": "--timeout 300"}).start(
        timeout=300)
    try:
        metrics_url = f"{server.base_url}/api/agent/metrics?window_days={window_days}"
        found: dict = {"metrics": medians(metrics_url, requests_count)}
        found["rss"] = [rss_mb(pid) for pid in server.worker_pids()]
        if compare:
            found["compare"] = medians(f"{server.base_url}{COMPARE}&window_days={window_days}",
                                       requests_count)
            found["rss_compared"] = [rss_mb(pid) for pid in server.worker_pids()]
    finally:
        server.stop()
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    edge = args.window_days * 86400
    with tempfile.TemporaryDirectory(prefix="usage-bench-") as folder:
        with_usage, without = Path(folder, "usage"), Path(folder, "plain")
        for store, share in ((with_usage, 0.5), (without, 0.0)):
            store.mkdir()
            write_store(store / "metrics.jsonl", args.records, args.days,
                        quiet=(edge - 3600, edge), usage_share=share)
        expected = plain_usage(with_usage / "metrics.jsonl", args.window_days)
        usage = serve(with_usage, args.window_days, args.requests, compare=True)
        plain = serve(without, args.window_days, args.requests, compare=False)

    answer = usage["metrics"][2].json()["usage"]
    totals = expected["totals"]
    assert answer["tasks_with_usage"] == totals["tasks_with_usage"]
    assert answer["input_tokens"] == totals["input_tokens"]
    assert answer["cost_usd"] == totals["cost_nanos"] / 1e9
    compared = usage["compare"][2].json()
    assert [compared[arm]["n"] for arm in ("a", "b")] == list(expected["arms"].values())

    rows = [
        ("warm GET /metrics with usage, median / p95",
         *(f"{usage['metrics'][i] * 1000:.2f} ms" for i in (0, 1)), "<= 5 ms"),
        ("warm GET /metrics without usage, median / p95",
         *(f"{plain['metrics'][i] * 1000:.2f} ms" for i in (0, 1)), ""),
        ("with / without usage (medians)",
         f"{usage['metrics'][0] / plain['metrics'][0]:.2f}x", "", ""),
        ("compare by prompt_variant, median / p95",
         *(f"{usage['compare'][i] * 1000:.2f} ms" for i in (0, 1)), "<= 100 ms"),
        ("resident memory per worker, with usage",
         " / ".join(f"{mb:.0f}" for mb in usage["rss"]) + " MB", "", "<= 150 MB"),
        ("the same after comparing (scipy loaded)",
         " / ".join(f"{mb:.0f}" for mb in usage["rss_compared"]) + " MB", "", ""),
        ("resident memory per worker, without usage",
         " / ".join(f"{mb:.0f}" for mb in plain["rss"]) + " MB", "", ""),
    ]
    print(f"usage: {args.records:,} records over {args.days:g} days, half with usage; "
          f"window {args.window_days} days: {totals['tasks_with_usage']:,} with usage, "
          f"arms of {compared['a']['n']:,} and {compared['b']['n']:,}; totals and arms "
          "match a plain pass")
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in [("measure", "median / value", "p95", "target"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
