"""The columns a claim reads, gathered for the pending rows alone.

A claim filters the pending tasks by ``run_after``, task type and model and picks the
highest priority. Read through the rows' indexes, each of those columns is a gather
from arrays of a million rows, a cache miss per pending task: about 0.2 ms per column
per 10,000 pending tasks on a busy machine, several times per claim. Kept side by side
in claim order and changed only where rows come and go, they are read at memory speed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

CLAIM_COLUMNS = ("task_type", "model", "priority", "run_after_us")


class PendingColumns:
    """:attr:`rows` (pending rows in claim order) and :attr:`columns` (their values of
    :data:`CLAIM_COLUMNS`), for the pending positions :attr:`positions`."""

    def __init__(self) -> None:
        self.positions: np.ndarray | None = None
        self.rows = np.empty(0, np.int32)
        self.columns: dict[str, np.ndarray] = {}

    def current(self, positions: np.ndarray) -> bool:
        """Whether these are the columns of ``positions`` (the same array object)."""
        return self.positions is positions

    def rebuild(self, positions: np.ndarray, order: np.ndarray,
                columns: Mapping[str, np.ndarray]) -> None:
        """Gather anew for ``positions`` in ``order``."""
        self.positions = positions
        self.rows = order[positions]
        self.columns = {name: columns[name][self.rows] for name in CLAIM_COLUMNS}

    def update(self, positions: np.ndarray, kept: np.ndarray, at: np.ndarray,
               added: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Follow a change of the pending positions to ``positions``: the entries where
        ``kept`` is true stay, and the rows ``added`` go in before the indexes ``at`` of
        what stays (as :func:`numpy.insert`)."""
        self.positions = positions
        if not len(added):  # rows only left (a claim): no insert, a copy per column
            self.rows = self.rows[kept]
            self.columns = {name: values[kept] for name, values in self.columns.items()}
            return
        self.rows = np.insert(self.rows[kept], at, added)
        self.columns = {name: np.insert(values[kept], at, columns[name][added])
                        for name, values in self.columns.items()}
