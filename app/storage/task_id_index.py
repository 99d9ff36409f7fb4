"""Which task_ids already have a metric record, in 16 bytes per record.

Each id is kept as its 64-bit hash and the byte offset of its line. A hash match is
confirmed by reading that line back, so a hash collision can never make two different
tasks look like one.

Ids arrive in batches: a trickle of single records from appends, or tens of thousands
at a time on a cold start. A trickle goes to a small dict; batches (and the dict, every
``MERGE_AT`` ids) become sorted numpy runs, and a run is merged into the one before it
once it is at least half its size. So there are O(log n) runs, each id is copied
O(log n) times in all, and a lookup is a binary search per run, without a million
Python objects.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MERGE_AT = 4096

TaskIdAt = Callable[[int], "str | None"]


class TaskIdIndex:
    def __init__(self, task_id_at: TaskIdAt) -> None:
        """``task_id_at(offset)`` returns the task_id of the valid record at that offset."""
        self._task_id_at = task_id_at
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._recent: dict[int, list[int]] = {}

    def _known_offsets(self, key: int) -> list[int]:
        found = list(self._recent.get(key, ()))
        for hashes, offsets in self._runs:
            left = int(np.searchsorted(hashes, key, side="left"))
            right = int(np.searchsorted(hashes, key, side="right"))
            found.extend(offsets[left:right].tolist())
        return found

    def contains(self, task_id: str) -> bool:
        return any(
            self._task_id_at(offset) == task_id for offset in self._known_offsets(hash(task_id))
        )

    def add_new(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """Add the ids not seen before (in order); returns which of them were new."""
        keys = _keys(task_ids)
        suspect = (self._entries(keys) > 0) | _repeats(keys)
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
        self._add(_keys(task_ids), offsets)

    def first_seen(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """For ids already added: whether each offset holds its id's first valid record."""
        keys = _keys(task_ids)
        first = self._entries(keys) == 1
        for i in np.flatnonzero(~first).tolist():
            holders = [offset for offset in self._known_offsets(int(keys[i]))
                       if self._task_id_at(offset) == task_ids[i]]
            first[i] = min(holders, default=-1) == offsets[i]
        return first

    def _entries(self, keys: np.ndarray) -> np.ndarray:
        """How many entries each key has."""
        order = np.argsort(keys)
        ordered = keys[order]  # sorted needles keep the binary searches cache-friendly
        sorted_counts = np.zeros(len(keys), np.int64)
        for hashes, _ in self._runs:
            sorted_counts += (np.searchsorted(hashes, ordered, side="right")
                              - np.searchsorted(hashes, ordered, side="left"))
        counts = np.empty_like(sorted_counts)
        counts[order] = sorted_counts
        if self._recent:
            counts += np.fromiter((len(self._recent.get(key, ())) for key in keys.tolist()),
                                  np.int64, len(keys))
        return counts

    def _add(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        if len(keys) >= MERGE_AT:
            self._add_run(keys, offsets)
            return
        for key, offset in zip(keys.tolist(), offsets.tolist()):
            self._recent.setdefault(key, []).append(offset)
        if len(self._recent) >= MERGE_AT:
            recent = [(key, offset) for key, found in self._recent.items() for offset in found]
            self._recent = {}
            self._add_run(np.array([k for k, _ in recent], np.int64),
                          np.array([o for _, o in recent], np.int64))

    def _add_run(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], offsets[order]))
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (old_keys, old_offsets), (new_keys, new_offsets) = self._runs[-2:]
            at = np.searchsorted(old_keys, new_keys, side="right")
            self._runs[-2:] = [(np.insert(old_keys, at, new_keys),
                                np.insert(old_offsets, at, new_offsets))]


def _keys(task_ids: list[str]) -> np.ndarray:
    return np.fromiter(map(hash, task_ids), np.int64, len(task_ids))


def _repeats(keys: np.ndarray) -> np.ndarray:
    """Marks every key that equals an earlier key in the same array."""
    order = np.argsort(keys, kind="stable")
    repeated = np.zeros(len(keys), bool)
    repeated[order[1:]] = keys[order][1:] == keys[order][:-1]
    return repeated
