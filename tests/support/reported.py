"""Finished tasks with what they used, as runners report it: for the tests of the pages
and commands that show usage."""
from __future__ import annotations

from tests.api.queue_client import claim, create, patch


def finish(client, clock, task_type: str, *, waited: float, status: str = "completed",
           usage: dict | None = None) -> None:
    """A task of ``task_type`` claimed ``waited`` seconds after it was created, and ended
    by its runner's report, with ``usage`` when given."""
    task = create(client, task_type)
    clock.advance(seconds=waited)
    assert claim(client, "host/r1", task_types=[task_type])["id"] == task["id"]
    report = {"runner_id": "host/r1", "status": status, "duration_seconds": 30.0}
    response = patch(client, task["id"], **report, **({"usage": usage} if usage else {}))
    assert response.status_code == 200, response.json


def finish_reported_examples(client, clock) -> None:
    """Four tasks: two impl (one failed) with tokens and a cost, a review with tokens
    alone, and a heal that reported nothing."""
    finish(client, clock, "impl", waited=30, usage={
        "input_tokens": 1_000_000, "output_tokens": 30_000, "cache_read_input_tokens": 250_000,
        "cost_usd": 4.0})
    finish(client, clock, "impl", waited=90, status="failed", usage={
        "input_tokens": 400_000, "output_tokens": 5_000, "cost_usd": 1.5})
    finish(client, clock, "review", waited=600, usage={"input_tokens": 40_000,
                                                       "output_tokens": 2_000})
    finish(client, clock, "heal", waited=5)


def with_usage(records: list[dict]) -> list[dict]:
    """``records`` where those of two of the three models and four of the five task types
    carry a usage (a cost, tokens alone, or tokens with cache reads) and a queue wait;
    cursor/auto and heal records carry neither, so their rows are unknown."""
    answer = []
    for index, record in enumerate(records):
        if record["model"] != "cursor/auto" and record["task_type"] != "heal":
            record = {**record, "input_tokens": 20_000 + 7_919 * index,
                      "output_tokens": 1_000 + 97 * index, "wait_seconds": 2.5 + index % 40 * 9}
            if index % 3:
                record["cost_usd"] = round(0.05 + index % 17 * 0.11, 4)
            if index % 4 == 0:
                record["cache_read_input_tokens"] = 50_000 + index
        answer.append(record)
    return answer
