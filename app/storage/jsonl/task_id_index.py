"""Which task_ids already have a metric record, in 16 bytes per record.

Each id is kept as its 64-bit hash and the byte offset of its line (a
:class:`~app.storage.jsonl.hash_runs.HashRuns`). A hash match is confirmed by reading that
line back, so a hash collision can never make two different tasks look like one.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.storage.jsonl.hash_runs import HashRuns, hash_key, hash_keys

TaskIdAt = Callable[[int], "str | None"]


class TaskIdIndex:
    def __init__(self, task_id_at: TaskIdAt) -> None:
        """``task_id_at(offset)`` returns the task_id of the valid record at that offset."""
        self._task_id_at = task_id_at
        self._offsets = HashRuns()

    def saved(self) -> tuple[np.ndarray, np.ndarray]:
        return self._offsets.saved()

    @classmethod
    def restored(cls, task_id_at: TaskIdAt, keys: np.ndarray, offsets: np.ndarray
                 ) -> TaskIdIndex:
        index = cls(task_id_at)
        index._offsets = HashRuns.restored(keys, offsets)
        return index

    def contains(self, task_id: str) -> bool:
        return any(self._task_id_at(offset) == task_id
                   for offset in self._offsets.values_of(hash_key(task_id)))

    def add_new(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """Add the ids not seen before (in order); returns which of them were new."""
        keys = hash_keys(task_ids)
        suspect = (self._offsets.counts(keys) > 0) | _repeats(keys)
        fresh = ~suspect
        for i in np.flatnonzero(suspect).tolist():
            earlier = np.flatnonzero(fresh[:i] & (keys[:i] == keys[i])).tolist()
            fresh[i] = not (
                self.contains(task_ids[i]) or any(task_ids[j] == task_ids[i] for j in earlier)
            )
        self._offsets.add(keys[fresh], offsets[fresh])
        return fresh

    def add_all(self, task_ids: list[str], offsets: np.ndarray) -> None:
        """Add ids as they stand, repeats included (lines only skimmed, not checked)."""
        self._offsets.add(hash_keys(task_ids), offsets)

    def first_seen(self, task_ids: list[str], offsets: np.ndarray) -> np.ndarray:
        """For ids already added: whether each offset holds its id's first valid record."""
        keys = hash_keys(task_ids)
        first = self._offsets.counts(keys) == 1
        for i in np.flatnonzero(~first).tolist():
            holders = [offset for offset in self._offsets.values_of(int(keys[i]))
                       if self._task_id_at(offset) == task_ids[i]]
            first[i] = min(holders, default=-1) == offsets[i]
        return first


def _repeats(keys: np.ndarray) -> np.ndarray:
    """Marks every key that equals an earlier key in the same array."""
    order = np.argsort(keys, kind="stable")
    repeated = np.zeros(len(keys), bool)
    repeated[order[1:]] = keys[order][1:] == keys[order][:-1]
    return repeated
