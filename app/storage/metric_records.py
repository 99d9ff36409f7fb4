"""Turning stored metric lines into validated columns.

A valid record has non-empty string ``task_id``, ``task_type`` and ``model``, a
``duration_seconds`` from 0 to MAX_DURATION_SECONDS, ``status`` completed or failed,
and an ISO 8601 ``created_at`` (UTC when it has no offset). Anything else is skipped.
Lines are decoded a chunk at a time: the common case (every record valid, timestamps in
UTC) is checked and converted with list comprehensions and numpy; a chunk with anything
unusual falls back to checking record by record.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from operator import itemgetter
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from app.clock import isoformat, parse_iso
from app.models.agent import MAX_DURATION_SECONDS
from app.models.metrics import FINAL_STATUSES

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)
UTC_SUFFIX = "+00:00"
MICROS = 1_000_000


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MICROSECOND


EARLIEST_US = to_micros(datetime.min.replace(tzinfo=timezone.utc))
LATEST_US = to_micros(datetime.max.replace(tzinfo=timezone.utc))
"""A record's ``created_at`` must be a moment that UTC can write (year 1 to 9999)."""


def is_duration(value: Any) -> TypeGuard[float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_DURATION_SECONDS
    )


def is_label(value: Any) -> TypeGuard[str]:
    return type(value) is str and bool(value)


@dataclass
class RecordBatch:
    """Valid records as parallel columns; times and durations in whole microseconds."""

    offsets: np.ndarray
    task_ids: list[str]
    task_types: list[str]
    models: list[str]
    completed: np.ndarray
    duration_us: np.ndarray
    created_us: np.ndarray

    def __len__(self) -> int:
        return len(self.task_ids)

    def rows(self) -> Iterator[MetricRecord]:
        return map(MetricRecord._make, zip(
            self.task_ids, self.task_types, self.models, self.completed.tolist(),
            self.duration_us.tolist(), self.created_us.tolist(),
        ))

    def select(self, keep: np.ndarray) -> RecordBatch:
        chosen = np.flatnonzero(keep).tolist()
        return RecordBatch(
            self.offsets[keep],
            [self.task_ids[i] for i in chosen],
            [self.task_types[i] for i in chosen],
            [self.models[i] for i in chosen],
            self.completed[keep],
            self.duration_us[keep],
            self.created_us[keep],
        )


class MetricRecord(NamedTuple):
    """One valid record; times and durations in whole microseconds."""

    task_id: str
    task_type: str
    model: str
    completed: bool
    duration_us: int
    created_us: int


def stored_record(
    task_id: str, task_type: str, model: str, duration_seconds: float, status: str,
    created_at: str,
) -> dict[str, Any]:
    """A record as a line of metrics.jsonl holds it. The key order is part of the
    canonical form that :mod:`app.storage.jsonl.metric_scan` skims."""
    return {
        "task_id": task_id,
        "task_type": task_type,
        "model": model,
        "duration_seconds": duration_seconds,
        "status": status,
        "created_at": created_at,
    }


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def as_stored(record: MetricRecord) -> dict[str, Any]:
    """A record in the store's own shape (``created_at`` in UTC with its offset)."""
    return stored_record(
        record.task_id, record.task_type, record.model, record.duration_us / MICROS,
        "completed" if record.completed else "failed", isoformat(from_micros(record.created_us)),
    )


def decode_record(raw: dict[str, Any]) -> MetricRecord | None:
    """The record a stored line holds, or None if it is not a valid record."""
    task_id, task_type, model = raw.get("task_id"), raw.get("task_type"), raw.get("model")
    duration, status = raw.get("duration_seconds"), raw.get("status")
    created = raw.get("created_at")
    if not (is_label(task_id) and is_label(task_type) and is_label(model)):
        return None
    if status not in FINAL_STATUSES or not is_duration(duration) or type(created) is not str:
        return None
    try:
        created_us = to_micros(parse_iso(created))
    except ValueError:
        return None
    if not EARLIEST_US <= created_us <= LATEST_US:
        return None
    return MetricRecord(
        task_id, task_type, model, status == "completed", round(duration * 1e6), created_us
    )


def _utc_micros(stamps: tuple[Any, ...]) -> np.ndarray | None:
    """Microseconds since the epoch if every stamp is ISO 8601 ending in +00:00."""
    if set(map(type, stamps)) != {str} or not all(s.endswith(UTC_SUFFIX) for s in stamps):
        return None
    try:
        naive = np.array([s[: -len(UTC_SUFFIX)] for s in stamps], dtype="datetime64[us]")
    except ValueError:
        return None
    return None if np.isnat(naive).any() else naive.astype(np.int64)


_FIELDS = itemgetter("task_id", "task_type", "model", "duration_seconds", "status", "created_at")


def _all_labels(values: tuple[Any, ...]) -> bool:
    return set(map(type, values)) == {str} and "" not in values


def _decode_common(offsets: np.ndarray, raws: list[dict[str, Any]]) -> RecordBatch | None:
    try:
        task_ids, task_types, models, durations, statuses, stamps = zip(*map(_FIELDS, raws))
    except KeyError:
        return None
    if not (
        _all_labels(task_ids)
        and _all_labels(task_types)
        and _all_labels(models)
        and set(map(type, durations)) <= {int, float}
        and set(statuses) <= set(FINAL_STATUSES)
    ):
        return None
    seconds = np.array(durations, dtype=np.float64)
    if not (np.isfinite(seconds).all() and (seconds >= 0).all()
            and (seconds <= MAX_DURATION_SECONDS).all()):
        return None
    created_us = _utc_micros(stamps)
    if created_us is None:
        return None
    return RecordBatch(
        offsets,
        list(task_ids),
        list(task_types),
        list(models),
        np.array(statuses) == "completed",
        np.round(seconds * 1e6).astype(np.int64),
        created_us,
    )


def decode_batch(offsets: np.ndarray, raws: list[dict[str, Any]]) -> RecordBatch:
    """The valid records among ``raws`` (lines at ``offsets``), as columns; invalid ones
    are logged."""
    batch = _decode_common(offsets, raws) if raws else None
    if batch is not None:
        return batch
    valid = []
    for offset, raw in zip(offsets.tolist(), raws):
        decoded = decode_record(raw)
        if decoded is None:
            log.warning("skipping invalid metric record at byte %d", offset)
        else:
            valid.append((offset, *decoded))
    columns = list(zip(*valid)) or [()] * 7
    return RecordBatch(
        np.array(columns[0], dtype=np.int64),
        list(columns[1]),
        list(columns[2]),
        list(columns[3]),
        np.array(columns[4], dtype=bool),
        np.array(columns[5], dtype=np.int64),
        np.array(columns[6], dtype=np.int64),
    )
