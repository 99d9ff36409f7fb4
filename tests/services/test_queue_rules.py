"""The rules of queue control without HTTP: backoff, caps and the locks a claim takes,
and the routing file's new keys."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from app.models.agent import TaskCreateSchema
from app.services.routing import (
    BUILTIN_ROUTES,
    Limits,
    Route,
    Routing,
    RoutingError,
    load_routing,
)
from app.services.task_limits import caps_of, next_claimable
from app.services.task_retries import Retry, backoff_seconds, may_retry

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def route(task_type: str, model: str, tier: str) -> Route:
    return Route(task_type, model, tier, ("cli", "--", "{direction}"))


ROUTING = Routing(
    {"impl": route("impl", "m/a", "small"), "test": route("test", "m/b", "small"),
     "review": route("review", "m/c", "big")},
    limits=Limits(models={"m/a": 1, "m/c": 2}, tiers={"small": 2}),
)


@dataclass
class FakeTransaction:
    """Pending tasks in claim order, and how many run of each model."""

    pending: list[dict[str, Any]]
    running: dict[str, int]
    held_elsewhere: frozenset[str] = frozenset()
    """Keys another claim holds: a wait for them would block, a try fails."""
    locks: list[tuple[list[str], bool]] = field(default_factory=list)
    asked: list[frozenset[str]] = field(default_factory=list)

    def next_pending(self, task_types: list[str] | None, now: datetime,
                     excluded_models: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        self.asked.append(excluded_models)
        return next((task for task in self.pending if task["model"] not in excluded_models),
                    None)

    def running_count(self, models: list[str], now: datetime) -> int:
        return sum(self.running.get(model, 0) for model in models)

    def lock(self, keys: list[str], wait: bool = True) -> bool:
        self.locks.append((keys, wait))
        assert not (wait and self.held_elsewhere & set(keys)), "the claim would wait"
        return not self.held_elsewhere & set(keys)


def tasks(*models: str) -> list[dict[str, Any]]:
    return [{"id": f"t{number}", "model": model} for number, model in enumerate(models)]


@pytest.mark.parametrize("attempts,expected", [(0, 30), (1, 30), (2, 60), (5, 480), (6, 900),
                                               (20, 900)])
def test_backoff_doubles_per_attempt_up_to_the_cap(attempts: int, expected: float) -> None:
    assert backoff_seconds(BUILTIN_ROUTES["impl"], attempts) == expected


def test_a_retry_is_asked_by_retryable_alone() -> None:
    assert Retry.of({"retryable": True, "retry_after_seconds": 4}) == Retry(4)
    assert Retry.of({"retryable": True}) == Retry(None)
    assert Retry.of({"retryable": False}) is None and Retry.of({}) is None


def test_no_retry_after_the_last_attempt_or_a_cancel() -> None:
    assert may_retry({"attempts": 2}, 3)
    assert not may_retry({"attempts": 3}, 3)
    assert not may_retry({"attempts": 1, "cancel_requested": True}, 3)


def test_a_model_counts_against_its_own_cap_and_its_tiers() -> None:
    assert [(cap.key, sorted(cap.models), cap.limit) for cap in caps_of(ROUTING, "m/a")] == [
        ("model:m/a", ["m/a"], 1), ("tier:small", ["m/a", "m/b"], 2)]
    assert [cap.key for cap in caps_of(ROUTING, "m/c")] == ["model:m/c"]
    assert caps_of(ROUTING, "listed/only") == []


def test_an_uncapped_task_is_claimed_without_a_lock() -> None:
    routing = Routing({"impl": route("impl", "m/x", "free")}, limits=ROUTING.limits)
    tx = FakeTransaction(tasks("m/x"), {})
    assert next_claimable(tx, routing, None, NOW)["id"] == "t0"
    assert tx.locks == []


def test_full_caps_pass_their_models_over_waiting_only_for_the_first_lock() -> None:
    tx = FakeTransaction(tasks("m/a", "m/b", "m/c"), {"m/a": 1, "m/b": 1})
    chosen = next_claimable(tx, ROUTING, None, NOW)
    assert chosen is not None and chosen["id"] == "t2"
    assert tx.asked == [frozenset(), frozenset({"m/a", "m/b"})]
    assert tx.locks == [(["model:m/a", "tier:small"], True), (["model:m/c"], False)]


def test_nothing_is_claimed_when_every_pending_task_is_capped() -> None:
    tx = FakeTransaction(tasks("m/a", "m/c"), {"m/a": 1, "m/c": 2})
    assert next_claimable(tx, ROUTING, None, NOW) is None
    assert tx.asked[-1] == frozenset({"m/a", "m/c"}) and len(tx.locks) == 2


def test_a_later_task_whose_cap_another_claim_counts_is_passed_over() -> None:
    """Holding the first task's keys, a claim never waits for another's: two claims
    doing so in the other order would each wait for the other."""
    tx = FakeTransaction(tasks("m/a", "m/c", "m/x"), {"m/a": 1},
                         held_elsewhere=frozenset({"model:m/c"}))
    chosen = next_claimable(tx, ROUTING, None, NOW)
    assert chosen is not None and chosen["id"] == "t2"
    assert tx.locks == [(["model:m/a", "tier:small"], True), (["model:m/c"], False)]


def test_the_routing_file_sets_attempts_backoff_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({
        "impl": {"max_attempts": 5, "backoff_seconds": 2.5, "backoff_max_seconds": 60},
        "limits": {"models": {"ollama/glm-4.7-flash:latest": 1}, "tiers": {"cloud": 3}},
    }))
    routing = load_routing(path)
    impl = routing.route("impl")
    assert (impl.max_attempts, impl.backoff_seconds, impl.backoff_max_seconds) == (5, 2.5, 60)
    assert routing.route("spec").max_attempts is None
    assert routing.limits == Limits({"ollama/glm-4.7-flash:latest": 1}, {"cloud": 3})
    assert routing.tier_models("cloud") == {"claude-3-5-haiku-20241022"}


@pytest.mark.parametrize("content,problem", [
    ({"impl": {"max_attempts": 0}}, "impl.max_attempts:"),
    ({"impl": {"max_attempts": 21}}, "impl.max_attempts:"),
    ({"impl": {"max_attempts": 2.5}}, "impl.max_attempts: Not a valid integer."),
    ({"impl": {"backoff_seconds": 0}}, "impl.backoff_seconds:"),
    ({"impl": {"backoff_seconds": "30"}}, "impl.backoff_seconds: Not a valid number."),
    ({"impl": {"backoff_max_seconds": -1}}, "impl.backoff_max_seconds:"),
    ({"limits": {"models": {"m": 0}}}, "limits.models.m.value:"),
    ({"limits": {"tiers": {"local": 1.5}}}, "limits.tiers.local.value:"),
    ({"limits": {"tiers": {"": 1}}}, "limits.tiers..key: Must not be blank."),
    ({"limits": {"gpus": {}}}, "limits.gpus: Unknown field."),
    ({"limits": []}, "limits._schema: Invalid input type."),
])
def test_bad_new_routing_keys_stop_the_server_with_one_line(
    tmp_path: Path, content: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(content))
    with pytest.raises(RoutingError) as raised:
        load_routing(path)
    message = str(raised.value)
    assert message.startswith(f"routing file {path}: ") and problem in message
    assert "\n" not in message


def test_run_after_is_loaded_in_utc_and_needs_its_offset() -> None:
    loaded = TaskCreateSchema().load({"direction": "d", "task_type": "spec",
                                      "run_after": "2026-03-01T14:00:00+02:00"})
    assert loaded["run_after"] == NOW and loaded["run_after"].tzinfo == timezone.utc
    for text in ("2026-03-01T14:00:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(ValidationError):
            TaskCreateSchema().load({"direction": "d", "task_type": "spec", "run_after": text})
