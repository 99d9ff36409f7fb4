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


def write_store(path: Path, count: int, days: float, *, end: datetime | None = None,
                quiet: tuple[float, float] | None = None, seed: int = 7) -> None:
    """``count`` records spread evenly over the ``days`` before ``end``, in time order.

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
    with open(path, "wb") as out:
        for start in range(0, count, 50_000):
            rows = range(start, min(start + 50_000, count))
            out.write(b"".join(orjson.dumps({
                "task_id": uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | n).hex,
                "task_type": TASK_TYPES[types[n]],
                "model": MODELS[models[n]],
                "duration_seconds": float(durations[n]),
                "status": "failed" if failed[n] else "completed",
                "created_at": (end - timedelta(seconds=float(offsets[n]))).isoformat(),
            }) + b"\n" for n in rows))
