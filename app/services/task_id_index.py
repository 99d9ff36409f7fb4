"""Which task_ids already have a metric record, in 16 bytes per record.

Each id is kept as its 64-bit hash and the byte offset of its line. A hash match is
confirmed by reading that line back, so a hash collision can never make two different
tasks look like one. Ids arrive in batches: a large batch (a cold start) is merged into
sorted numpy arrays at once; a trickle of single records goes to a small dict first,
merged into the arrays every ``MERGE_AT`` ids. Lookups stay O(log n) without a million
Python objects.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MERGE_AT = 4096

TaskIdAt = Callable[[int], "str | None"]


class TaskIdIndex:
    def __init__(self, task_id_at: TaskIdAt) -> None:
        """``task_id_at(offset)`` returns the task_id on the line at that offset."""
        self._task_id_at = task_id_at
        self._hashes = np.empty(0, np.int64)
        self._offsets = np.empty(0, np.int64)
        self._recent: dict[int, list[int]] = {}

    def _known_offsets(self, key: int) -> list[int]:
        found = list(self._recent.get(key, ()))
        left = int(np.searchsorted(self._hashes, key, side="left"))
        right = int(np.searchsorted(self._hashes, key, side="right"))
        found.extend(self._offsets[left:right].tolist())
        return found

    def contains(self, task_id: str) -> bool:
        return any(
            self._task_id_at(offset) == task_id for offset in self._known_offsets(hash(task_id))
        )

    def add_new(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """Add the ids not seen before (in order); returns which of them were new."""
        keys = np.fromiter(map(hash, task_ids), np.int64, len(task_ids))
        suspect = self._maybe_known(keys) | _repeats(keys)
        fresh = ~suspect
        for i in np.flatnonzero(suspect).tolist():
            earlier = np.flatnonzero(fresh[:i] & (keys[:i] == keys[i])).tolist()
            fresh[i] = not (
                self.contains(task_ids[i]) or any(task_ids[j] == task_ids[i] for j in earlier)
            )
        self._add(keys[fresh], offsets[fresh])
        return fresh

    def add_all(self, task_ids: list[str], offsets: np.ndarray) -> None:
        """Add ids as they stand, repeats included (lines only skimmed, not checked)."""
        self._add(np.fromiter(map(hash, task_ids), np.int64, len(task_ids)), offsets)

    def first_seen(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """For ids already added: whether each offset holds its id's first valid record."""
        keys = np.fromiter(map(hash, task_ids), np.int64, len(task_ids))
        entries = (np.searchsorted(self._hashes, keys, side="right")
                   - np.searchsorted(self._hashes, keys, side="left"))
        if self._recent:
            entries += np.fromiter((len(self._recent.get(key, ())) for key in keys.tolist()),
                                   np.int64, len(keys))
        first = entries == 1
        for i in np.flatnonzero(~first).tolist():
            holders = [offset for offset in self._known_offsets(int(keys[i]))
                       if self._task_id_at(offset) == task_ids[i]]
            first[i] = min(holders, default=-1) == offsets[i]
        return first

    def _maybe_known(self, keys: np.ndarray) -> np.ndarray:
        known = np.zeros(len(keys), bool)
        if len(self._hashes):
            at = np.searchsorted(self._hashes, keys).clip(max=len(self._hashes) - 1)
            known = self._hashes[at] == keys
        if self._recent:
            known |= np.fromiter((key in self._recent for key in keys.tolist()), bool, len(keys))
        return known

    def _add(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        if len(keys) >= MERGE_AT:
            self._merge(keys, offsets)
            return
        for key, offset in zip(keys.tolist(), offsets.tolist()):
            self._recent.setdefault(key, []).append(offset)
        if len(self._recent) >= MERGE_AT:
            recent = [(key, offset) for key, found in self._recent.items() for offset in found]
            self._recent = {}
            self._merge(np.array([k for k, _ in recent], np.int64),
                        np.array([o for _, o in recent], np.int64))

    def _merge(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        keys, offsets = keys[order], offsets[order]
        at = np.searchsorted(self._hashes, keys, side="right")
        self._hashes = np.insert(self._hashes, at, keys)
        self._offsets = np.insert(self._offsets, at, offsets)


def _repeats(keys: np.ndarray) -> np.ndarray:
    """Marks every key that equals an earlier key in the same array."""
    order = np.argsort(keys, kind="stable")
    repeated = np.zeros(len(keys), bool)
    repeated[order[1:]] = keys[order][1:] == keys[order][:-1]
    return repeated
