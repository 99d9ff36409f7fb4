"""The running tasks of the JSONL task store under a lease, indexed for the questions a
claim asks on every call: what does this runner hold, which leases ran out, how many
tasks of these models run. A claim must not walk every lease for each of them: a store
with a thousand runners has a thousand leases."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from app.clock import parse_iso
from app.storage.metric_records import to_micros


class Leases:
    def __init__(self) -> None:
        self._leases: dict[int, dict[str, Any]] = {}
        """By row: ``runner_id`` and ``lease_expires_at`` as stored."""
        self._expires_us: dict[int, int] = {}
        self._by_runner: dict[Any, set[int]] = {}
        self._by_model: dict[int, set[int]] = {}
        self._model_of: dict[int, int] = {}
        """The model code each row is filed under in :attr:`_by_model`."""

    def __contains__(self, row: int) -> bool:
        return row in self._leases

    def __iter__(self) -> Iterator[int]:
        return iter(self._leases)

    def get(self, row: int) -> dict[str, Any] | None:
        return self._leases.get(row)

    def items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(self._leases.items())

    def hold(self, row: int, runner_id: Any, expires_at: str) -> None:
        self.release(row)
        self._leases[row] = {"runner_id": runner_id, "lease_expires_at": expires_at}
        self._expires_us[row] = to_micros(parse_iso(expires_at))
        self._by_runner.setdefault(runner_id, set()).add(row)

    def release(self, row: int) -> None:
        lease = self._leases.pop(row, None)
        if lease is None:
            return
        del self._expires_us[row]
        self._by_runner[lease["runner_id"]].discard(row)
        if not self._by_runner[lease["runner_id"]]:
            del self._by_runner[lease["runner_id"]]
        self._unfile(row)

    def _unfile(self, row: int) -> None:
        filed = self._model_of.pop(row, None)
        if filed is not None:
            self._by_model[filed].discard(row)

    def file_models(self, rows: Iterable[int], model_of: Any) -> None:
        """File these rows, if leased, under their model code ``model_of[row]`` (called
        once the model column holds the rows' latest models)."""
        for row in rows:
            self._unfile(row)
            if row in self._leases:
                code = self._model_of[row] = int(model_of[row])
                self._by_model.setdefault(code, set()).add(row)

    def held_by(self, runner_id: str, now_us: int) -> list[int]:
        """The rows ``runner_id`` holds under a lease that runs past ``now_us``."""
        return [row for row in self._by_runner.get(runner_id, ())
                if self._expires_us[row] > now_us]

    def expired(self, now_us: int) -> list[int]:
        """The rows whose lease ran out by ``now_us``; the soonest expiry is looked at
        first, so that a store with no expired lease answers without walking them."""
        if not self._expires_us or min(self._expires_us.values()) > now_us:
            return []
        return [row for row, expires in self._expires_us.items() if expires <= now_us]

    def has_expired(self, row: int, now_us: int) -> bool:
        return row in self._expires_us and self._expires_us[row] <= now_us

    def running(self, model_codes: Iterable[int], now_us: int) -> int:
        """Rows of these models under a lease that runs past ``now_us``."""
        return sum(1 for code in model_codes for row in self._by_model.get(code, ())
                   if self._expires_us[row] > now_us)
