"""Which task_ids already have a metric record, in 16 bytes per record.

Each id is kept as its 64-bit hash and the byte offset of its line. A hash match is
confirmed by reading that line back, so a hash collision can never make two different
tasks look like one. Recent ids sit in a dict; every ``MERGE_AT`` of them are merged
into sorted numpy arrays, which keeps lookups at O(log n) without a million Python
objects.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MERGE_AT = 65536

LineReader = Callable[[int], "str | None"]


class TaskIdIndex:
    def __init__(self, task_id_at: LineReader) -> None:
        """``task_id_at(offset)`` returns the task_id on the line at that offset."""
        self._task_id_at = task_id_at
        self._hashes = np.empty(0, np.int64)
        self._offsets = np.empty(0, np.int64)
        self._recent: dict[int, list[int]] = {}

    def _candidate_offsets(self, key: int) -> list[int]:
        found = list(self._recent.get(key, ()))
        left = int(np.searchsorted(self._hashes, key, side="left"))
        right = int(np.searchsorted(self._hashes, key, side="right"))
        found.extend(int(offset) for offset in self._offsets[left:right])
        return found

    def contains(self, task_id: str) -> bool:
        return any(
            self._task_id_at(offset) == task_id
            for offset in self._candidate_offsets(hash(task_id))
        )

    def add(self, task_id: str, offset: int) -> None:
        self._recent.setdefault(hash(task_id), []).append(offset)
        if len(self._recent) >= MERGE_AT:
            self._merge()

    def add_new(self, entries: list[tuple[str, int]]) -> list[bool]:
        """Add (task_id, offset) pairs in order; for each, whether it was new."""
        if not entries:
            return []
        keys = np.fromiter((hash(task_id) for task_id, _ in entries), np.int64, len(entries))
        positions = np.searchsorted(self._hashes, keys).clip(max=max(len(self._hashes) - 1, 0))
        maybe_old = (
            self._hashes[positions] == keys if len(self._hashes) else np.zeros(len(keys), bool)
        )
        fresh = []
        for (task_id, offset), key, check_base in zip(entries, keys.tolist(), maybe_old.tolist()):
            seen = (check_base or key in self._recent) and self.contains(task_id)
            fresh.append(not seen)
            if not seen:
                self.add(task_id, offset)
        return fresh

    def _merge(self) -> None:
        keys = np.fromiter(
            (key for key, offsets in self._recent.items() for _ in offsets), np.int64
        )
        offsets = np.fromiter(
            (offset for offsets in self._recent.values() for offset in offsets), np.int64
        )
        order = np.argsort(keys, kind="stable")
        keys, offsets = keys[order], offsets[order]
        at = np.searchsorted(self._hashes, keys, side="right")
        self._hashes = np.insert(self._hashes, at, keys)
        self._offsets = np.insert(self._offsets, at, offsets)
        self._recent = {}
