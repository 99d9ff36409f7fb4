"""What a compaction did, shared by the stores that can be compacted."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class CompactionReport:
    """Counts of one compaction: lines kept and why the others went."""

    kept: int = 0
    expired: int = 0
    superseded: int = 0
    invalid: int = 0

    def summary(self) -> str:
        return (f"kept {self.kept}, dropped {self.expired} older than the cutoff, "
                f"{self.superseded} superseded, {self.invalid} invalid")


def cutoff(now: datetime, keep_days: int) -> datetime:
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    return now - timedelta(days=keep_days)
