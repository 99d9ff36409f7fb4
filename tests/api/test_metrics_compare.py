"""GET /api/agent/metrics/compare: every number checked against an independent
computation on the same tasks (scipy called directly for the p-values, plain Python for
the counts, rates, Wilson intervals and percentiles), on both backends."""
from __future__ import annotations

import math
import random
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from flask.testing import FlaskClient
from scipy import stats

from tests.api.queue_client import claim, create, patch, routed_client
from tests.support import FakeClock

COMPARE = "/api/agent/metrics/compare"
RUNNER = "host/r1"
Z95 = NormalDist().inv_cdf(0.975)


class Arm:
    """What the test made one arm of: each task's outcome, duration and cost."""

    def __init__(self) -> None:
        self.completed: list[bool] = []
        self.durations: list[float] = []
        self.costs: list[float] = []


def finish_task(client: FlaskClient, task_type: str = "impl", *, completed: bool = True,
                duration: float = 10.0, cost: float | None = None,
                executor: str | None = None, **context: Any) -> None:
    """A task created with ``context``, claimed, and reported by its runner with a usage
    (its cost when given; tokens alone, with no prices, leave the cost unknown)."""
    task = create(client, task_type, context=context)
    claimed = claim(client, RUNNER, task_types=[task_type])
    assert claimed is not None and claimed["id"] == task["id"]
    usage: dict[str, Any] = {"input_tokens": 100, "output_tokens": 20}
    if cost is not None:
        usage["cost_usd"] = cost
    report = {"runner_id": RUNNER, "status": "completed" if completed else "failed",
              "duration_seconds": duration, "usage": usage,
              **({} if executor is None else {"executor": executor})}
    response = patch(client, task["id"], **report)
    assert response.status_code == 200, response.json


def add(client: FlaskClient, arm: Arm | None, variant: str | None, rng: random.Random, count: int,
        success: float, durations: tuple[int, int], costs: tuple[float, float],
        cost_known: float = 1.0, task_type: str = "impl") -> None:
    """``count`` tasks of ``variant`` (none: no prompt_variant), noted in ``arm``.
    Durations are whole seconds from a narrow range, so that they tie."""
    for _ in range(count):
        completed = rng.random() < success
        duration = float(rng.randint(*durations))
        cost = round(rng.uniform(*costs), 4) if rng.random() < cost_known else None
        finish_task(client, task_type, completed=completed, duration=duration, cost=cost,
                    **({} if variant is None else {"prompt_variant": variant}))
        if arm is not None:
            arm.completed.append(completed)
            arm.durations.append(duration)
            if cost is not None:
                arm.costs.append(cost)


def wilson(successes: int, n: int) -> list[float]:
    p = successes / n
    denominator = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denominator
    return [centre - half, centre + half]


def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(percent / 100 * len(ordered)) - 1]


def expected_arm(value: str, arm: Arm) -> dict[str, Any]:
    n, done = len(arm.completed), sum(arm.completed)
    return {
        "value": value, "n": n, "completed": done, "failed": n - done,
        "success_rate": done / n, "success_rate_ci95": wilson(done, n),
        "p50_seconds": nearest_rank(arm.durations, 50),
        "p95_seconds": nearest_rank(arm.durations, 95),
        "avg_cost_usd": sum(arm.costs) / len(arm.costs), "n_with_cost": len(arm.costs),
    }


def leaning(a: list[float], b: list[float]) -> int:
    """+1 if b's values are more often the higher of a pair (a, b), -1 if the lower."""
    higher = sum(y > x for x in a for y in b)
    lower = sum(y < x for x in a for y in b)
    return (higher > lower) - (higher < lower)


def expected_verdict(p_value: float, b_leans: int, higher_is_better: bool) -> str:
    if p_value >= 0.05:
        return "no significant difference"
    return "b better" if (b_leans > 0) == higher_is_better else "b worse"


def expected_comparison(a: Arm, b: Arm, names: tuple[str, str], **echo: Any) -> dict[str, Any]:
    arm_a, arm_b = expected_arm(names[0], a), expected_arm(names[1], b)
    fisher = stats.fisher_exact([[arm_a["completed"], arm_a["failed"]],
                                 [arm_b["completed"], arm_b["failed"]]]).pvalue
    mann_whitney = stats.mannwhitneyu(a.durations, b.durations, alternative="two-sided",
                                      method="asymptotic", use_continuity=True).pvalue
    welch = stats.ttest_ind(a.costs, b.costs, equal_var=False).pvalue
    return {
        **echo,
        "a": arm_a,
        "b": arm_b,
        "difference": {
            "success_rate": {"delta": arm_b["success_rate"] - arm_a["success_rate"],
                             "p_value": fisher},
            "p50_seconds": {"delta": arm_b["p50_seconds"] - arm_a["p50_seconds"],
                            "p_value": mann_whitney},
            "avg_cost_usd": {"delta": arm_b["avg_cost_usd"] - arm_a["avg_cost_usd"],
                             "p_value": welch},
        },
        "verdict": {
            "success": expected_verdict(fisher, leaning(a.completed, b.completed), True),
            "duration": expected_verdict(mann_whitney, leaning(a.durations, b.durations),
                                         False),
            "cost": expected_verdict(welch, leaning(a.costs, b.costs), False),
        },
    }


def assert_matches(answer: Any, expected: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (the service sums in another order)."""
    if isinstance(expected, dict):
        assert set(answer) == set(expected), path
        for key in expected:
            assert_matches(answer[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(answer) == len(expected), path
        for index, (got, want) in enumerate(zip(answer, expected)):
            assert_matches(got, want, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert answer == pytest.approx(expected, rel=1e-9, abs=1e-12), path
    else:
        assert answer == expected, path


def compare(client: FlaskClient, **query: Any) -> dict[str, Any]:
    response = client.get(COMPARE, query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def test_every_number_agrees_with_an_independent_computation(
    client: FlaskClient, clock: FakeClock
) -> None:
    rng = random.Random(26)
    # Older than the window: left out of a 7-day comparison.
    add(client, None, "long-v1", rng, 6, 0.0, (900, 990), (5.0, 6.0))
    clock.advance(days=8)
    a, b = Arm(), Arm()
    add(client, a, "long-v1", rng, 24, 0.55, (60, 80), (0.30, 0.50))
    add(client, b, "terse-v2", rng, 26, 0.95, (40, 62), (0.30, 0.52), cost_known=0.8)
    # Neither arm: another variant, no variant, another task type.
    add(client, None, "other", rng, 5, 0.5, (1, 5), (9.0, 9.5))
    add(client, None, None, rng, 5, 0.5, (1, 5), (9.0, 9.5))
    add(client, None, "terse-v2", rng, 5, 0.0, (1, 5), (9.0, 9.5), task_type="spec")
    clock.advance(hours=1)

    answer = compare(client, by="prompt_variant", a="long-v1", b="terse-v2",
                     task_type="impl", window_days=7)
    expected = expected_comparison(a, b, ("long-v1", "terse-v2"), by="prompt_variant",
                                   task_type="impl", window_days=7)
    assert_matches(answer, expected)
    # The data were made to show a difference in success and duration, not in cost.
    assert answer["verdict"] == {"success": "b better", "duration": "b better",
                                 "cost": "no significant difference"}
    assert 0 < answer["b"]["n_with_cost"] < answer["b"]["n"]


def test_the_window_and_the_task_type_choose_the_records(
    client: FlaskClient, clock: FakeClock
) -> None:
    rng = random.Random(7)
    old_a, old_b = Arm(), Arm()
    add(client, old_a, "v1", rng, 4, 0.5, (10, 20), (0.1, 0.2))
    add(client, old_b, "v2", rng, 3, 0.5, (10, 20), (0.1, 0.2))
    clock.advance(days=3)
    a, b = Arm(), Arm()
    add(client, a, "v1", rng, 5, 0.5, (10, 20), (0.1, 0.2), task_type="spec")
    add(client, b, "v2", rng, 6, 0.5, (30, 40), (0.3, 0.4), task_type="spec")

    default = compare(client, by="prompt_variant", a="v1", b="v2")
    assert default["window_days"] == 7 and default["task_type"] is None
    assert (default["a"]["n"], default["b"]["n"]) == (9, 9)
    last_two_days = compare(client, by="prompt_variant", a="v1", b="v2", window_days=2)
    assert_matches(last_two_days, expected_comparison(
        a, b, ("v1", "v2"), by="prompt_variant", task_type=None, window_days=2))
    impl_only = compare(client, by="prompt_variant", a="v1", b="v2", task_type="impl")
    assert (impl_only["a"]["n"], impl_only["b"]["n"]) == (4, 3)


def test_arms_by_skill_version_executor_and_model(
    tmp_path: Path, logs_dir: Path, clock: FakeClock
) -> None:
    models = ("model-a", "model-b")
    client = routed_client(tmp_path, logs_dir, clock, {"models": list(models)})
    for index in range(5):
        finish_task(client, completed=index != 0, duration=10 + index, cost=0.1,
                    skill_version="2026.1", executor="host-a", model_override=models[0])
    for index in range(3):
        finish_task(client, completed=True, duration=30 + index, skill_version="2026.2",
                    executor="host-b", model_override=models[1])
    for by, a, b in (("skill_version", "2026.1", "2026.2"), ("executor", "host-a", "host-b"),
                     ("model", *models)):
        answer = compare(client, by=by, a=a, b=b)
        assert (answer["by"], answer["a"]["value"], answer["b"]["value"]) == (by, a, b)
        assert (answer["a"]["n"], answer["a"]["completed"], answer["b"]["n"]) == (5, 4, 3)
        assert (answer["a"]["p50_seconds"], answer["b"]["p50_seconds"]) == (12.0, 31.0)
        assert (answer["a"]["n_with_cost"], answer["b"]["n_with_cost"]) == (5, 0)
        # b has no known cost: no cost difference, and too little to test it.
        assert answer["b"]["avg_cost_usd"] is None
        assert answer["difference"]["avg_cost_usd"] == {"delta": None, "p_value": None}
        assert answer["verdict"]["cost"] == "not enough data"
        assert answer["verdict"]["duration"] == "b worse"


def test_an_empty_arm_answers_zeros_and_nulls(client: FlaskClient) -> None:
    for index in range(3):
        finish_task(client, completed=index > 0, duration=5 + index, cost=0.2,
                    prompt_variant="v1")
    answer = compare(client, by="prompt_variant", a="v1", b="never-used")
    assert answer["b"] == {
        "value": "never-used", "n": 0, "completed": 0, "failed": 0, "success_rate": 0.0,
        "success_rate_ci95": None, "p50_seconds": 0.0, "p95_seconds": 0.0,
        "avg_cost_usd": None, "n_with_cost": 0}
    assert answer["a"]["n"] == 3 and answer["a"]["avg_cost_usd"] == pytest.approx(0.2)
    assert answer["difference"] == {name: {"delta": None, "p_value": None}
                                    for name in ("success_rate", "p50_seconds",
                                                 "avg_cost_usd")}
    assert answer["verdict"] == {"success": "not enough data", "duration": "not enough data",
                                 "cost": "not enough data"}


def test_with_no_records_at_all_both_arms_are_empty(client: FlaskClient) -> None:
    answer = compare(client, by="executor", a="x", b="y")
    assert (answer["a"]["n"], answer["b"]["n"]) == (0, 0)
    assert set(answer["verdict"].values()) == {"not enough data"}


def test_one_task_an_arm_is_not_enough_data_but_its_numbers_show(client: FlaskClient) -> None:
    finish_task(client, completed=True, duration=10, cost=0.1, prompt_variant="v1")
    finish_task(client, completed=False, duration=20, cost=0.3, prompt_variant="v2")
    finish_task(client, completed=False, duration=21, cost=0.4, prompt_variant="v2")
    answer = compare(client, by="prompt_variant", a="v1", b="v2")
    assert answer["difference"]["success_rate"] == {"delta": -1.0, "p_value": None}
    assert answer["difference"]["p50_seconds"] == {"delta": 10.0, "p_value": None}
    assert answer["difference"]["avg_cost_usd"]["p_value"] is None
    assert answer["difference"]["avg_cost_usd"]["delta"] == pytest.approx(0.25)
    assert set(answer["verdict"].values()) == {"not enough data"}
    assert answer["a"]["success_rate_ci95"] == pytest.approx(wilson(1, 1))


def test_enough_tasks_but_too_few_costs_is_not_enough_data_for_cost_alone(
    client: FlaskClient,
) -> None:
    for variant in ("v1", "v2"):
        for index in range(4):
            finish_task(client, duration=10 + index, cost=0.5 if index == 0 else None,
                        prompt_variant=variant)
    answer = compare(client, by="prompt_variant", a="v1", b="v2")
    assert answer["verdict"] == {"success": "no significant difference",
                                 "duration": "no significant difference",
                                 "cost": "not enough data"}
    assert answer["difference"]["avg_cost_usd"] == {"delta": 0.0, "p_value": None}
    assert answer["difference"]["success_rate"]["p_value"] == 1.0


@pytest.mark.parametrize("query", [
    {"a": "v1", "b": "v2"},
    {"by": "colour", "a": "v1", "b": "v2"},
    {"by": "task_type", "a": "spec", "b": "impl"},
    {"by": "prompt_variant", "b": "v2"},
    {"by": "prompt_variant", "a": "v1"},
    {"by": "prompt_variant", "a": "", "b": "v2"},
    {"by": "prompt_variant", "a": "v1", "b": "v2", "window_days": 0},
    {"by": "prompt_variant", "a": "v1", "b": "v2", "window_days": 366},
    {"by": "prompt_variant", "a": "v1", "b": "v2", "window_days": "week"},
    {"by": "prompt_variant", "a": "v1", "b": "v2", "window": 7},
    {"by": "prompt_variant", "a": "v\u0000", "b": "v2"},
])
def test_a_bad_query_is_422(client: FlaskClient, query: dict[str, Any]) -> None:
    response = client.get(COMPARE, query_string=query)
    assert response.status_code == 422
    assert response.json["detail"] == "Invalid request."


def test_the_window_is_that_of_the_aggregates_to_the_microsecond(
    client: FlaskClient, clock: FakeClock
) -> None:
    finish_task(client, prompt_variant="v1")
    finish_task(client, prompt_variant="v2")
    for step, counted in (({"days": 7}, 1), ({"microseconds": 1}, 0)):
        clock.advance(**step)
        total = client.get("/api/agent/metrics?window_days=7").json["success_rate"]["total"]
        answer = compare(client, by="prompt_variant", a="v1", b="v2", window_days=7)
        assert total == 2 * counted
        assert (answer["a"]["n"], answer["b"]["n"]) == (counted, counted)
