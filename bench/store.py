"""Generate a metrics store of the shape a long-running pipeline leaves behind."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson

TASK_TYPES = ("spec", "test", "impl", "review", "heal")
MODELS = ("ollama/glm-4.7-flash:latest", "claude-3-5-haiku-20241022", "cursor/auto",
          "local/tiny")


PROMPT_VARIANTS = ("terse-v1", "terse-v2", "verbose-v1")


def usage_columns(rng: np.random.Generator, count: int, share: float) -> list[dict]:
    """The optional fields of ``count`` records: about ``share`` of them ran with usage
    reported (tokens, a queue wait, one of three prompt variants and, for 80% of them, a
    cost); the others carry none, as records written before usage was kept."""
    with_usage = rng.random(count) < share
    with_cost = rng.random(count) < 0.8
    variants = rng.integers(0, len(PROMPT_VARIANTS), count)
    input_tokens = rng.integers(100, 200_000, count)
    output_tokens = rng.integers(10, 20_000, count)
    waits = np.round(rng.exponential(30, count), 3)
    costs = np.round(rng.uniform(0.001, 2.5, count), 6)
    return [
        {"input_tokens": int(input_tokens[n]), "output_tokens": int(output_tokens[n]),
         "wait_seconds": float(waits[n]), "prompt_variant": PROMPT_VARIANTS[variants[n]],
         **({"cost_usd": float(costs[n])} if with_cost[n] else {})}
        if with_usage[n] else {}
        for n in range(count)
    ]


def write_store(path: Path, count: int, days: float, *, end: datetime | None = None,
                quiet: tuple[float, float] | None = None, seed: int = 7,
                usage_share: float = 0.0) -> None:
    """``count`` records spread evenly over the ``days`` before ``end``, in time order;
    about ``usage_share`` of them carry usage (:func:`usage_columns`).

    ``quiet``, a (youngest, oldest) pair of ages in seconds, leaves that span without
    records (they are moved to just before it), so a window edge that moves through it
    during a benchmark does not change the answer.
    """
    end = end or datetime.now(timezone.utc)
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(0, days * 86400, count)
    if quiet:
        youngest, oldest = quiet
        inside = (offsets >= youngest) & (offsets < oldest)
        offsets[inside] += oldest - youngest
    offsets = np.sort(offsets)[::-1]
    durations = np.round(rng.lognormal(3.5, 1.0, count), 3)
    types = rng.integers(0, len(TASK_TYPES), count)
    models = rng.integers(0, len(MODELS), count)
    failed = rng.random(count) < 0.08
    optional = usage_columns(rng, count, usage_share) if usage_share else [{}] * count
    with open(path, "wb") as out:
        for start in range(0, count, 50_000):
            rows = range(start, min(start + 50_000, count))
            out.write(b"".join(orjson.dumps({
                "task_id": uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | n).hex,
                "task_type": TASK_TYPES[types[n]],
                "model": MODELS[models[n]],
                "duration_seconds": float(durations[n]),
                "status": "failed" if failed[n] else "completed",
                **optional[n],
                "created_at": (end - timedelta(seconds=float(offsets[n]))).isoformat(),
            }) + b"\n" for n in rows))
