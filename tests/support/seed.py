"""Metric stores written by hand: records spread over days, with the lines a real store
may also hold (corrupt lines, second records of a task, invalid records)."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

TASK_TYPES = ("spec", "test", "impl", "review", "heal")
MODELS = ("cursor/auto", "ollama/glm-4.7-flash:latest", "claude-3-5-haiku-20241022")


PROMPT_VARIANTS = ("terse-v1", "terse-v2", "verbose-v1")


def usage_fields(rng: random.Random) -> dict:
    """The optional fields of a record that ran with usage reported: tokens, sometimes a
    cost (costs missing where no prices were known), a prompt variant, a queue wait."""
    fields = {
        "attempts": rng.choice([1, 1, 1, 2, 3]),
        "wait_seconds": round(rng.expovariate(1 / 30), 3),
        "input_tokens": rng.randrange(100, 200_000),
        "output_tokens": rng.randrange(10, 20_000),
        "cache_read_input_tokens": rng.randrange(0, 500_000),
        "prompt_variant": rng.choice(PROMPT_VARIANTS),
        "executor": rng.choice(("runner-a", "runner-b")),
    }
    if rng.random() < 0.8:
        fields["cost_usd"] = round(rng.uniform(0.001, 2.5), 6)
    if rng.random() < 0.5:
        fields["skill_version"] = rng.choice(("1.0", "1.1"))
    return fields


def spread_records(now: datetime, count: int, *, days: float, seed: int = 7,
                   usage_share: float = 0.0) -> list[dict]:
    """``count`` records created over the ``days`` before ``now``, in a shuffled order;
    about ``usage_share`` of them carry :func:`usage_fields`."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        created = now - timedelta(seconds=rng.uniform(0, days * 86400))
        if n % 5 == 0:
            created = created.replace(tzinfo=None)  # naive: taken as UTC
        records.append({
            "task_id": f"seeded-{n}",
            "task_type": rng.choice(TASK_TYPES),
            "model": rng.choice(MODELS),
            "duration_seconds": round(rng.choice([rng.uniform(0.2, 60), rng.uniform(60, 9000)]), 3),
            "status": "completed" if rng.random() < 0.8 else "failed",
            **(usage_fields(rng) if rng.random() < usage_share else {}),
            "created_at": created.isoformat(),
        })
    rng.shuffle(records)
    return records


NOISE = [
    "garbage",
    '{"task_id": "bad-status", "task_type": "impl", "model": "x", "duration_seconds": 1,'
    ' "status": "running", "created_at": "2026-03-01T00:00:00+00:00"}',
    '{"task_id": "bad-duration", "task_type": "impl", "model": "x", "duration_seconds": -1,'
    ' "status": "failed", "created_at": "2026-03-01T00:00:00+00:00"}',
    '{"task_id": "bad-date", "task_type": "impl", "model": "x", "duration_seconds": 1,'
    ' "status": "failed", "created_at": "yesterday"}',
]


def write_store(path: Path, records: list[dict], *, noise: bool = True) -> None:
    """Append ``records`` (and, after the first, the noise lines) to a store file."""
    lines = [json.dumps(record) for record in records]
    if noise and lines:
        second = {**records[0], "model": "second-record", "status": "failed"}
        lines[1:1] = [*NOISE, json.dumps(second)]
    with open(path, "a") as handle:
        handle.write("".join(line + "\n" for line in lines))
