"""Turning stored metric lines into validated columns.

A valid record has non-empty string ``task_id``, ``task_type`` and ``model``, a
``duration_seconds`` from 0 to MAX_DURATION_SECONDS, ``status`` completed or failed,
and an ISO 8601 ``created_at`` (UTC when it has no offset). Anything else is skipped.
A record may also hold the fields of ``OPTIONAL_RECORD_FIELDS``; one of the wrong type
or range is left out of its record, which stays valid. A chunk's optional fields are
decoded field by field, and not at all when no line of the chunk has any.
Lines are decoded a chunk at a time: the common case (every record valid, timestamps in
UTC) is checked and converted with list comprehensions and numpy; a chunk with anything
unusual falls back to checking record by record.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from operator import itemgetter
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from app.clock import isoformat, parse_iso
from app.models.agent import (
    MAX_COST_USD,
    MAX_DURATION_SECONDS,
    MAX_TOKENS,
    TOKEN_FIELDS,
    is_record_label,
)
from app.models.metrics import FINAL_STATUSES, OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.models.text import MAX_NAME_CHARS

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


MAX_ATTEMPTS_STORED = 2 ** 31 - 1


def _whole(most: int, least: int = 0) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and least <= value <= most


def _amount(most: float) -> Callable[[Any], bool]:
    """A number from 0 to ``most`` (NaN and infinities fail the comparison)."""
    return lambda value: type(value) in (int, float) and 0 <= value <= most


OPTIONAL_CHECKS: dict[str, Callable[[Any], bool]] = {
    "attempts": _whole(MAX_ATTEMPTS_STORED, least=1),
    "wait_seconds": _amount(MAX_DURATION_SECONDS),
    **{name: _whole(MAX_TOKENS) for name in TOKEN_FIELDS},
    "cost_usd": _amount(MAX_COST_USD),
    "prompt_variant": is_record_label,
    "skill_version": is_record_label,
    "executor": is_record_label,
}
"""What a valid value of each optional field is (a number is never a bool)."""
AMOUNTS = ("wait_seconds", "cost_usd")
NO_OPTIONAL_FIELDS: Mapping[str, Any] = MappingProxyType({})


def optional_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The optional fields of ``raw`` that hold valid values, in the order of
    ``OPTIONAL_RECORD_FIELDS``; amounts as floats, as every backend gives them back."""
    fields = {name: raw[name] for name in OPTIONAL_RECORD_FIELDS
              if name in raw and OPTIONAL_CHECKS[name](raw[name])}
    for name in AMOUNTS:
        if name in fields:
            fields[name] = float(fields[name])
    return fields


def optional_values(values: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Per optional field, its valid values in a run of records (None where a record
    lacks it or holds an invalid value; amounts as floats), for the fields that at least
    one record holds."""
    checked = {}
    for name in OPTIONAL_RECORD_FIELDS:
        if name not in values:
            continue
        check = OPTIONAL_CHECKS[name]
        kept = [None if value is None or not check(value) else value
                for value in values[name]]
        if name in AMOUNTS:
            kept = [None if value is None else float(value) for value in kept]
        if kept.count(None) < len(kept):
            checked[name] = kept
    return checked


QUICK_CHECKS: dict[str, tuple[type, float, float]] = {
    "attempts": (int, 1, MAX_ATTEMPTS_STORED),
    "wait_seconds": (float, 0, MAX_DURATION_SECONDS),
    **{name: (int, 0, MAX_TOKENS) for name in TOKEN_FIELDS},
    "cost_usd": (float, 0, MAX_COST_USD),
    **{name: (str, 1, MAX_NAME_CHARS)
       for name in ("prompt_variant", "skill_version", "executor")},
}
"""Per optional field, the one type and the range (of lengths, for texts) of values that
:func:`quickly_valid` passes at once: they are all valid under ``OPTIONAL_CHECKS``."""


def quickly_valid(name: str, present: list[Any]) -> bool:
    """Whether all of ``present`` (values, none of them None) are of the field's usual
    type and in its range, checked for the run at once; False also when some may be
    valid but are not all of that type (then :func:`optional_values` checks them)."""
    kind, least, most = QUICK_CHECKS[name]
    if set(map(type, present)) != {kind}:
        return False
    if kind is str:
        return least <= min(map(len, present)) and max(map(len, present)) <= most
    if kind is int:
        return least <= min(present) and max(present) <= most
    amounts = np.array(present, np.float64)  # NaN fails both comparisons
    return bool((amounts >= least).all() and (amounts <= most).all())


def quick_optional_values(values: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """What :func:`optional_values` gives, the fields whose values are all
    :func:`quickly_valid` checked without going value by value."""
    checked: dict[str, list[Any]] = {}
    slow = {}
    for name, column in values.items():
        present = [value for value in column if value is not None]
        if not present:
            continue
        if quickly_valid(name, present):
            checked[name] = list(column)
        else:
            slow[name] = column
    checked.update(optional_values(slow))
    return {name: checked[name] for name in OPTIONAL_RECORD_FIELDS if name in checked}


def _lines_optional_values(raws: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """:func:`optional_values` of stored lines; quick when no line has an optional field,
    and only the fields some line holds are looked for."""
    if not raws or max(map(len, raws)) <= len(RECORD_FIELDS):
        return {}
    held = set().union(*raws)
    return quick_optional_values({name: list(map(dict.get, raws, repeat(name)))
                                  for name in OPTIONAL_RECORD_FIELDS if name in held})


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
    optional: dict[str, list[Any]] = field(default_factory=dict)
    """What :func:`optional_values` gives for the records: a field no record holds is
    left out."""

    def __len__(self) -> int:
        return len(self.task_ids)

    def optional_rows(self) -> Iterator[Mapping[str, Any]]:
        """Each record's optional fields, in the order of ``OPTIONAL_RECORD_FIELDS``."""
        if not self.optional:
            return repeat(NO_OPTIONAL_FIELDS, len(self))
        names = list(self.optional)
        return ({name: value for name, value in zip(names, values) if value is not None}
                for values in zip(*self.optional.values()))

    def rows(self) -> Iterator[MetricRecord]:
        return map(MetricRecord._make, zip(
            self.task_ids, self.task_types, self.models, self.completed.tolist(),
            self.duration_us.tolist(), self.created_us.tolist(), self.optional_rows(),
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
            {name: [values[i] for i in chosen] for name, values in self.optional.items()},
        )


class MetricRecord(NamedTuple):
    """One valid record; times and durations in whole microseconds."""

    task_id: str
    task_type: str
    model: str
    completed: bool
    duration_us: int
    created_us: int
    optional: Mapping[str, Any] = NO_OPTIONAL_FIELDS
    """Its valid optional fields."""


def stored_record(
    task_id: str, task_type: str, model: str, duration_seconds: float, status: str,
    created_at: str, optional: Mapping[str, Any] = NO_OPTIONAL_FIELDS,
) -> dict[str, Any]:
    """A record as a line of metrics.jsonl holds it. The key order is part of the
    canonical form that :mod:`app.storage.jsonl.metric_scan` skims: the optional fields
    go before ``created_at``, which ends the line."""
    return {
        "task_id": task_id,
        "task_type": task_type,
        "model": model,
        "duration_seconds": duration_seconds,
        "status": status,
        **optional,
        "created_at": created_at,
    }


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def as_stored(record: MetricRecord) -> dict[str, Any]:
    """A record in the store's own shape (``created_at`` in UTC with its offset)."""
    return stored_record(
        record.task_id, record.task_type, record.model, record.duration_us / MICROS,
        "completed" if record.completed else "failed", isoformat(from_micros(record.created_us)),
        record.optional,
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
    return MetricRecord(task_id, task_type, model, status == "completed",
                        round(duration * 1e6), created_us, optional_fields(raw))


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
    """The valid records among ``raws`` (lines at ``offsets``), as columns with their
    optional fields; invalid ones are logged."""
    batch = _decode_common(offsets, raws) if raws else None
    if batch is None:
        batch, raws = _decode_each(offsets, raws)
    batch.optional = _lines_optional_values(raws)
    return batch


def _decode_each(
    offsets: np.ndarray, raws: list[dict[str, Any]]
) -> tuple[RecordBatch, list[dict[str, Any]]]:
    """The valid records, checked one by one, and the lines that hold them."""
    valid, kept = [], []
    for offset, raw in zip(offsets.tolist(), raws):
        decoded = decode_record(raw)
        if decoded is None:
            log.warning("skipping invalid metric record at byte %d", offset)
        else:
            valid.append((offset, *decoded[:-1]))
            kept.append(raw)
    columns = list(zip(*valid)) or [()] * 7
    return RecordBatch(
        np.array(columns[0], dtype=np.int64),
        list(columns[1]),
        list(columns[2]),
        list(columns[3]),
        np.array(columns[4], dtype=bool),
        np.array(columns[5], dtype=np.int64),
        np.array(columns[6], dtype=np.int64),
    ), kept
