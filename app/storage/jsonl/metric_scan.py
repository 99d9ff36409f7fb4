"""Skimming old metric lines without parsing them.

A process that starts on a large store needs every task_id (to keep one record per
task) but only the records inside the window it is asked about. Lines written by
``record_task`` have one canonical form (compact JSON, keys in a fixed order, created_at
in UTC with ``+00:00``), so for a chunk made only of such lines the task_ids and
timestamps can be picked out with one regular expression, and timestamps compared as
strings. A chunk whose lines are not all canonical is simply not skimmed: it is decoded
in full like any other, so hand-written or damaged lines never lead to a wrong answer.
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass

import numpy as np

from app.storage.metric_records import EPOCH, ONE_MICROSECOND

CANONICAL_LINE = re.compile(
    rb'^\{"task_id":"([^"\\\n]+)",[^\n]*"created_at":"([0-9T:.-]{26})\+00:00"\}$', re.M
)
STAMP_LENGTH = 26


@dataclass
class SkimmedChunk:
    """task_ids and line offsets of a chunk whose records are all older than a cutoff."""

    task_ids: list[str]
    offsets: np.ndarray
    newest: bytes


@lru_cache(maxsize=64)
def stamp_of(created_us: int) -> bytes:
    """The canonical created_at text, without its offset, of a time in microseconds."""
    return (EPOCH + created_us * ONE_MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%f").encode()


def _last_stamp(data: bytes) -> bytes:
    key = b'"created_at":"'
    at = data.rfind(key) + len(key)
    return data[at: at + STAMP_LENGTH]


def skim(start: int, data: bytes, older_than: bytes) -> SkimmedChunk | None:
    """The chunk's task_ids and offsets if every line is canonical and every
    created_at is before ``older_than`` (canonical text); otherwise None."""
    if not data.endswith(b"}") or _last_stamp(data) >= older_than:
        return None
    lines = data.count(b"\n") + 1
    found = CANONICAL_LINE.findall(data)
    if len(found) != lines:
        return None
    task_ids, stamps = zip(*found)
    newest = max(stamps)
    if newest >= older_than or min(map(len, stamps)) != STAMP_LENGTH:
        return None
    starts = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) + 1
    offsets = np.concatenate([[0], starts]).astype(np.int64) + start
    return SkimmedChunk([task_id.decode() for task_id in task_ids], offsets, newest)
