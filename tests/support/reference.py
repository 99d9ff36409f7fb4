"""A from-scratch computation of the aggregates, written plainly, to check against."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path


def _created(record: dict) -> datetime | None:
    try:
        moment = datetime.fromisoformat(record["created_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _valid(record: dict) -> bool:
    duration = record.get("duration_seconds")
    return (
        all(isinstance(record.get(k), str) and record.get(k)
            for k in ("task_id", "task_type", "model"))
        and record.get("status") in ("completed", "failed")
        and isinstance(duration, (int, float)) and not isinstance(duration, bool)
        and math.isfinite(duration) and duration >= 0
        and _created(record) is not None
    )


def records_in(path: Path) -> list[dict]:
    """Valid records on complete lines, in file order, first record per task_id only."""
    seen, out = set(), []
    if not path.exists():
        return out
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            record = json.loads(line.decode("utf-8"))  # bytes alone may be taken as UTF-16
        except ValueError:
            continue
        if isinstance(record, dict) and _valid(record) and record["task_id"] not in seen:
            seen.add(record["task_id"])
            out.append(record)
    return out


def nearest_rank(values: list[float], percent: int) -> float:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1]


def aggregates(records: list[dict], now: datetime, window_days: int) -> dict:
    cutoff = now - timedelta(days=window_days)
    window = [r for r in records if cutoff <= _created(r) <= now]
    micros = [round(r["duration_seconds"] * 1e6) for r in window]
    completed = sum(r["status"] == "completed" for r in window)
    by_type: dict = {}
    by_model: dict = {}
    for record, duration in zip(window, micros):
        entry = by_type.setdefault(record["task_type"], {"count": 0, "completed": 0, "failed": 0})
        entry["count"] += 1
        entry[record["status"]] += 1
        model = by_model.setdefault(record["model"], [0, 0])
        model[0] += 1
        model[1] += duration
    return {
        "success_rate": {
            "completed": completed, "failed": len(window) - completed, "total": len(window),
            "rate": round(completed / len(window), 2) if window else 0.0,
        },
        "p50_seconds": nearest_rank(micros, 50) / 1e6,
        "p95_seconds": nearest_rank(micros, 95) / 1e6,
        "by_task_type": {
            name: {**entry, "success_rate": round(entry["completed"] / entry["count"], 2)}
            for name, entry in by_type.items()
        },
        "by_model": {
            name: {"count": count, "avg_duration": round(total / count / 1e6, 1)}
            for name, (count, total) in by_model.items()
        },
    }


def comparable(answer: dict) -> dict:
    """The parts of a service answer that :func:`aggregates` computes."""
    return {
        "success_rate": answer["success_rate"],
        "p50_seconds": answer["execution_time"]["p50_seconds"],
        "p95_seconds": answer["execution_time"]["p95_seconds"],
        "by_task_type": answer["by_task_type"],
        "by_model": answer["by_model"],
    }


def timeseries(records: list[dict], now: datetime, window_days: int, bucket: str) -> list[dict]:
    """Per UTC hour or day from the one holding the cutoff through the one holding now."""
    width = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    cutoff = now - timedelta(days=window_days)
    window = [r for r in records if cutoff <= _created(r) <= now]
    start = epoch + (cutoff - epoch) // width * width
    series = []
    while start <= now:
        inside = [r for r in window if start <= _created(r) < start + width]
        micros = [round(r["duration_seconds"] * 1e6) for r in inside]
        completed = sum(r["status"] == "completed" for r in inside)
        series.append({
            "start": start.isoformat(timespec="microseconds"), "completed": completed,
            "failed": len(inside) - completed,
            "p50_seconds": nearest_rank(micros, 50) / 1e6,
            "p95_seconds": nearest_rank(micros, 95) / 1e6,
        })
        start += width
    return series


def finished_counts(records: list[dict]) -> dict[tuple[str, str, str], int]:
    counts: dict = {}
    for r in records:
        key = (r["task_type"], r["model"], r["status"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def histogram(records: list[dict], task_type: str, model: str, bounds: list[float]) -> dict:
    """Cumulative count per upper bound (``le`` as Prometheus writes it), sum, count."""
    durations = [r["duration_seconds"] for r in records
                 if r["task_type"] == task_type and r["model"] == model]
    buckets = {str(float(b)): sum(d <= b for d in durations) for b in bounds}
    buckets["+Inf"] = len(durations)
    return {"buckets": buckets, "sum": sum(durations), "count": len(durations)}
