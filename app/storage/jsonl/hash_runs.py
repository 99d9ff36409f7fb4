"""A multimap from 64-bit keys to 64-bit values in 16 bytes per entry, without a
million Python objects.

Entries arrive in batches: a trickle of single entries from appends, or tens of
thousands at a time on a cold start. A trickle goes to a small dict; batches (and the
dict, every ``MERGE_AT`` entries) become sorted numpy runs, and a run is merged into the
one before it once it is at least half its size. So there are O(log n) runs, each entry
is copied O(log n) times in all, and a lookup is a binary search per run.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

MERGE_AT = 4096


class HashRuns:
    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._recent: dict[int, list[int]] = {}

    def values_of(self, key: int) -> list[int]:
        """Every value added under ``key``."""
        found = list(self._recent.get(key, ()))
        for keys, values in self._runs:
            left = int(np.searchsorted(keys, key, side="left"))
            right = int(np.searchsorted(keys, key, side="right"))
            found.extend(values[left:right].tolist())
        return found

    def counts(self, keys: np.ndarray) -> np.ndarray:
        """How many values each key has."""
        order = np.argsort(keys)
        ordered = keys[order]  # sorted needles keep the binary searches cache-friendly
        sorted_counts = np.zeros(len(keys), np.int64)
        for run_keys, _ in self._runs:
            sorted_counts += (np.searchsorted(run_keys, ordered, side="right")
                              - np.searchsorted(run_keys, ordered, side="left"))
        counts = np.empty_like(sorted_counts)
        counts[order] = sorted_counts
        if self._recent:
            counts += np.fromiter((len(self._recent.get(key, ())) for key in keys.tolist()),
                                  np.int64, len(keys))
        return counts

    def only_values(self, keys: np.ndarray) -> np.ndarray:
        """For each key, its value if it has exactly one, -1 if none, -2 if several."""
        found = np.full(len(keys), -1, np.int64)
        seen = np.zeros(len(keys), np.int64)
        for run_keys, values in self._runs:
            left = np.searchsorted(run_keys, keys, side="left")
            right = np.searchsorted(run_keys, keys, side="right")
            hit = right > left
            found[hit] = values[left[hit]]
            seen += right - left
        if self._recent:
            for i, key in enumerate(keys.tolist()):
                for value in self._recent.get(key, ()):
                    found[i] = value
                    seen[i] += 1
        found[seen == 0] = -1
        found[seen > 1] = -2
        return found

    def saved(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry as one sorted run: keys and values."""
        keys = [run_keys for run_keys, _ in self._runs]
        values = [run_values for _, run_values in self._runs]
        if self._recent:
            keys.append(np.array([k for k, found in self._recent.items() for _ in found],
                                 np.int64))
            values.append(np.array([v for found in self._recent.values() for v in found],
                                   np.int64))
        if not keys:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        all_keys, all_values = np.concatenate(keys), np.concatenate(values)
        order = np.argsort(all_keys, kind="stable")
        return all_keys[order], all_values[order]

    @classmethod
    def restored(cls, keys: np.ndarray, values: np.ndarray) -> HashRuns:
        """Entries from what :meth:`saved` gave."""
        if len(keys) != len(values) or (np.diff(keys) < 0).any():
            raise ValueError("keys out of order, or not one value per key")
        runs = cls()
        if len(keys):
            runs._runs = [(keys.astype(np.int64), values.astype(np.int64))]
        return runs

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if len(keys) >= MERGE_AT:
            self._add_run(keys, values)
            return
        for key, value in zip(keys.tolist(), values.tolist()):
            self._recent.setdefault(key, []).append(value)
        if len(self._recent) >= MERGE_AT:
            recent = [(key, value) for key, found in self._recent.items() for value in found]
            self._recent = {}
            self._add_run(np.array([k for k, _ in recent], np.int64),
                          np.array([v for _, v in recent], np.int64))

    def _add_run(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], values[order]))
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (old_keys, old_values), (new_keys, new_values) = self._runs[-2:]
            at = np.searchsorted(old_keys, new_keys, side="right")
            self._runs[-2:] = [(np.insert(old_keys, at, new_keys),
                                np.insert(old_values, at, new_values))]


WORD_HASHED_CHARS = 64
"""ASCII strings up to this long are hashed by :func:`_word_keys`, in numpy; others by
blake2b, one by one. Each string always goes the same way, so its key never changes."""
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
WORD_MASK = (1 << 64) - 1
NUMPY_FROM = 64
"""From this many strings on, :func:`hash_keys` hashes them in numpy."""


def hash_keys(texts: list[str]) -> np.ndarray:
    """64-bit keys of strings that are the same in every process and every run, so they
    can be saved beside a store and read back by another process. A few strings are
    hashed in plain Python (numpy's set-up would cost more than the hashing)."""
    if len(texts) < NUMPY_FROM:
        return np.fromiter(map(hash_key, texts), np.int64, len(texts))
    keys = np.empty(len(texts), np.int64)
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    ascii_ = np.fromiter(map(str.isascii, texts), bool, len(texts))
    word_hashed = ascii_ & (lengths > 0) & (lengths <= WORD_HASHED_CHARS)
    for length in np.unique(lengths[word_hashed]).tolist():
        chosen = np.flatnonzero(word_hashed & (lengths == length))
        group = texts if len(chosen) == len(texts) else [texts[i] for i in chosen.tolist()]
        keys[chosen] = _word_keys("".join(group).encode("ascii"), len(group), length)
    for i in np.flatnonzero(~word_hashed).tolist():
        keys[i] = hash_key(texts[i])
    return keys


def hash_key(text: str) -> int:
    """The key of one string: the same as :func:`hash_keys` gives it."""
    if text.isascii() and 0 < len(text) <= WORD_HASHED_CHARS:
        data = text.encode("ascii")
        key = len(data)
        for (word,) in struct.iter_unpack("<Q", data + bytes(-len(data) % 8)):
            key = _mix_int(key ^ word)
        return key - (1 << 64) if key >= 1 << 63 else key
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


def _mix_int(key: int) -> int:
    """:func:`_mix` on one Python int."""
    key = ((key ^ (key >> 30)) * int(_MIX[0])) & WORD_MASK
    key = ((key ^ (key >> 27)) * int(_MIX[1])) & WORD_MASK
    return key ^ (key >> 31)


def _word_keys(data: bytes, count: int, length: int) -> np.ndarray:
    """Keys of ``count`` strings of ``length`` bytes each, laid end to end in ``data``:
    each 8-byte word is mixed into the key in turn (splitmix64's finalizer)."""
    strings = np.frombuffer(data, np.uint8).reshape(count, length)
    if length % 8:
        strings = np.pad(strings, ((0, 0), (0, 8 - length % 8)))
    words = np.ascontiguousarray(strings).view("<u8")
    keys = np.full(count, length, np.uint64)
    with np.errstate(over="ignore"):
        for column in range(words.shape[1]):
            keys ^= words[:, column]
            _mix(keys)
    return keys.view(np.int64)


def _mix(keys: np.ndarray) -> None:
    """splitmix64's finalizer, in place."""
    keys ^= keys >> np.uint64(30)
    keys *= _MIX[0]
    keys ^= keys >> np.uint64(27)
    keys *= _MIX[1]
    keys ^= keys >> np.uint64(31)
