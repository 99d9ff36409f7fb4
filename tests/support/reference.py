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


TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
          "cache_creation_input_tokens")
LABELS = ("prompt_variant", "skill_version", "executor")


def _number(value: object, most: float) -> bool:
    """An int or float (never a bool) from 0 to ``most``; NaN fails the comparison."""
    return type(value) in (int, float) and 0 <= value <= most


def known(record: dict, field: str) -> object | None:
    """The record's ``field`` when it holds a value a record may hold, else None: such a
    value is ignored as if absent."""
    value = record.get(field)
    if field in TOKENS:
        ok = type(value) is int and 0 <= value <= 2 ** 53
    elif field == "attempts":
        ok = type(value) is int and 1 <= value <= 2 ** 31 - 1
    elif field == "wait_seconds":
        ok = _number(value, 1e8)
    elif field == "cost_usd":
        ok = _number(value, 1e9)
    elif field in LABELS:
        ok = isinstance(value, str) and 1 <= len(value) <= 200
    else:
        raise KeyError(field)
    return value if ok else None


def valid_optional(record: dict) -> dict:
    """The optional fields of ``record`` that hold valid values."""
    fields = ("attempts", "wait_seconds", *TOKENS, "cost_usd", *LABELS)
    return {name: known(record, name) for name in fields if known(record, name) is not None}


def token_sum(records: list[dict], field: str) -> int | None:
    """The sum of the records that know ``field``; None when none does."""
    values = [known(r, field) for r in records if known(r, field) is not None]
    return sum(values) if values else None


def cost_nanos(records: list[dict]) -> int | None:
    """The cost in whole nano-dollars, summed over the records that know it."""
    values = [round(known(r, "cost_usd") * 1e9) for r in records
              if known(r, "cost_usd") is not None]
    return sum(values) if values else None


def cost_sum(records: list[dict]) -> float | None:
    """The cost in USD: the whole nano-dollars divided exactly (an int over an int, so
    a sum past 2**53 nano-dollars is not rounded to a float first)."""
    nanos = cost_nanos(records)
    return None if nanos is None else nanos / 10 ** 9


def cost_and_tokens(records: list[dict]) -> dict:
    return {"cost_usd": cost_sum(records), "input_tokens": token_sum(records, "input_tokens"),
            "output_tokens": token_sum(records, "output_tokens")}


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


def _micros(record: dict) -> int:
    return round(record["duration_seconds"] * 1e6)


def _label_breakdown(window: list[dict], field: str) -> dict:
    groups: dict = {}
    for record in window:
        label = known(record, field)
        if label is not None:
            groups.setdefault(label, []).append(record)
    answer = {}
    for label, group in groups.items():
        completed = sum(r["status"] == "completed" for r in group)
        micros = [_micros(r) for r in group]
        answer[label] = {
            "count": len(group), "completed": completed, "failed": len(group) - completed,
            "success_rate": round(completed / len(group), 2),
            "p50_seconds": nearest_rank(micros, 50) / 1e6,
            "avg_duration": round(sum(micros) / len(group) / 1e6, 1),
            "cost_usd": cost_sum(group),
        }
    return answer


def usage(window: list[dict]) -> dict:
    """The ``usage`` of the aggregates over the records of ``window``."""
    completed = sum(r["status"] == "completed" for r in window)
    nanos = cost_nanos(window)
    return {
        "tasks_with_usage": sum(
            any(known(r, name) is not None for name in (*TOKENS, "cost_usd")) for r in window),
        **{name: token_sum(window, name) for name in TOKENS},
        "cost_usd": cost_sum(window),
        "cost_per_completed_task": (round(nanos / completed / 1e9, 9)
                                    if nanos is not None and completed else None),
    }


def queue_wait(window: list[dict]) -> dict:
    waits = [round(known(r, "wait_seconds") * 1e6) for r in window
             if known(r, "wait_seconds") is not None]
    return {
        "p50_seconds": nearest_rank(waits, 50) / 1e6 if waits else None,
        "p95_seconds": nearest_rank(waits, 95) / 1e6 if waits else None,
        "count": len(waits),
    }


def aggregates(records: list[dict], now: datetime, window_days: int) -> dict:
    cutoff = now - timedelta(days=window_days)
    window = [r for r in records if cutoff <= _created(r) <= now]
    micros = [_micros(r) for r in window]
    completed = sum(r["status"] == "completed" for r in window)
    by_type: dict = {}
    by_model: dict = {}
    for record in window:
        by_type.setdefault(record["task_type"], []).append(record)
        by_model.setdefault(record["model"], []).append(record)
    type_entries = {}
    for name, group in by_type.items():
        done = sum(r["status"] == "completed" for r in group)
        type_entries[name] = {
            "count": len(group), "completed": done, "failed": len(group) - done,
            "success_rate": round(done / len(group), 2), **cost_and_tokens(group)}
    return {
        "success_rate": {
            "completed": completed, "failed": len(window) - completed, "total": len(window),
            "rate": round(completed / len(window), 2) if window else 0.0,
        },
        "p50_seconds": nearest_rank(micros, 50) / 1e6,
        "p95_seconds": nearest_rank(micros, 95) / 1e6,
        "by_task_type": type_entries,
        "by_model": {
            name: {"count": len(group),
                   "avg_duration": round(sum(map(_micros, group)) / len(group) / 1e6, 1),
                   **cost_and_tokens(group)}
            for name, group in by_model.items()
        },
        "usage": usage(window),
        "queue_wait": queue_wait(window),
        **{f"by_{field}": _label_breakdown(window, field) for field in LABELS},
    }


def comparable(answer: dict) -> dict:
    """The parts of a service answer that :func:`aggregates` computes."""
    return {
        "success_rate": answer["success_rate"],
        "p50_seconds": answer["execution_time"]["p50_seconds"],
        "p95_seconds": answer["execution_time"]["p95_seconds"],
        "by_task_type": answer["by_task_type"],
        "by_model": answer["by_model"],
        "usage": answer["usage"],
        "queue_wait": answer["queue_wait"],
        **{f"by_{field}": answer[f"by_{field}"] for field in LABELS},
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
            **cost_and_tokens(inside),
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
