"""The plain approach, as a baseline: parse the whole file on every request."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


def _rank(ordered: list[float], percent: int) -> float:
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1] if ordered else 0


def full_rescan(path: Path, window_days: int, now: datetime | None = None) -> dict[str, Any]:
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=window_days)
    durations: list[float] = []
    completed = 0
    by_type: dict[str, list[int]] = {}
    by_model: dict[str, list[float]] = {}
    with open(path, "rb") as lines:
        for line in lines:
            try:
                record = json.loads(line)
                created = datetime.fromisoformat(record["created_at"])
            except (ValueError, KeyError, TypeError):
                continue
            if created < cutoff:
                continue
            ok = record["status"] == "completed"
            completed += ok
            durations.append(record["duration_seconds"])
            entry = by_type.setdefault(record["task_type"], [0, 0])
            entry[0 if ok else 1] += 1
            model = by_model.setdefault(record["model"], [0, 0.0])
            model[0] += 1
            model[1] += record["duration_seconds"]
    durations.sort()
    total = len(durations)
    return {
        "success_rate": {"completed": completed, "failed": total - completed, "total": total,
                         "rate": round(completed / total, 2) if total else 0.0},
        "execution_time": {"p50_seconds": _rank(durations, 50),
                           "p95_seconds": _rank(durations, 95)},
        "by_task_type": {name: {"count": done + lost, "completed": done, "failed": lost,
                                "success_rate": round(done / (done + lost), 2)}
                         for name, (done, lost) in by_type.items()},
        "by_model": {name: {"count": count, "avg_duration": round(total_s / count, 1)}
                     for name, (count, total_s) in by_model.items()},
    }
