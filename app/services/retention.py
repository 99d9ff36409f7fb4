"""How far back compaction keeps what the stores hold."""
from __future__ import annotations

from datetime import datetime, timedelta


def cutoff(now: datetime, keep_days: int) -> datetime:
    """The oldest time a compaction run at ``now`` keeps, ``keep_days`` back."""
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    return now - timedelta(days=keep_days)
