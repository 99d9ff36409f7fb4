"""All-time totals: built record by record (what a compaction carries) and from the
columns (what a scrape reads) alike, exact, and readable from the JSON of any version."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import orjson
import pytest

from app.storage.metric_columns import RecordColumns
from app.storage import metric_totals
from app.storage.metric_records import decode_batch, decode_record
from app.storage.metric_totals import (
    SLOTS,
    WAIT_BOUNDS_SECONDS,
    WAIT_SLOTS,
    Entry,
    Known,
    RunningTotals,
    Totals,
    cost_nanos,
    finished_counts,
    token_sums,
    wait_histograms,
)
from tests.support.seed import spread_records

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
CREATED = "2026-03-01T00:00:00+00:00"


def record(task_id: str, **fields: object) -> dict:
    return {"task_id": task_id, "task_type": "impl", "model": "m", "duration_seconds": 2.0,
            "status": "completed", **fields, "created_at": CREATED}


def both_ways(raws: list[dict]) -> Totals:
    """The totals of ``raws`` from the columns, checked equal to those added record by
    record (the two may not differ in any part)."""
    columns = RecordColumns()
    columns.add(decode_batch(np.arange(len(raws), dtype=np.int64), raws))
    from_columns = Totals.from_columns(columns)
    added = Totals()
    for raw in raws:
        decoded = decode_record(raw)
        assert decoded is not None
        added.add(decoded)
    assert from_columns == added
    return from_columns


def through_json(totals: Totals) -> Totals:
    """Totals written and read back as the JSONL store's carried file does (orjson)."""
    return Totals.from_json(orjson.loads(orjson.dumps(totals.to_json())))


def spread(count: int, **options: object) -> list[dict]:
    return orjson.loads(orjson.dumps(spread_records(NOW, count, days=90, **options)))


def many_labels(count: int) -> list[dict]:
    """Records with hundreds of task types and models: label codes too sparse for the
    lookup table, so the columns group them with numpy.unique."""
    return [record(f"t{n}", task_type=f"type-{n % 301}", model=f"model-{n % 307}",
                   input_tokens=n, cost_usd=n / 1000, wait_seconds=n / 7)
            for n in range(count)]


@pytest.mark.parametrize("raws", [
    spread(2000, usage_share=0.6),
    spread(300),
    many_labels(700),
], ids=["some-usage", "no-usage", "many-labels"])
def test_columns_and_records_give_equal_totals(raws) -> None:
    totals = both_ways(raws)
    assert sum(finished_counts(totals).values()) == len(raws)
    assert through_json(totals) == totals


def test_one_entry_by_hand() -> None:
    totals = both_ways([
        record("a", input_tokens=10, output_tokens=0, cost_usd=0.1, wait_seconds=0.5),
        record("b", input_tokens=5, cost_usd=0.2, wait_seconds=0.500001),
        record("c", status="failed", cache_creation_input_tokens=7, cost_usd=0,
               wait_seconds=10 ** 6),
        record("d"),
    ])
    done, failed = totals.entries[("impl", "m", "completed")], totals.entries[
        ("impl", "m", "failed")]
    assert done.count == 3 and done.duration_us == 6_000_000
    assert done.tokens == {"input_tokens": Known(2, 15), "output_tokens": Known(1, 0),
                           "cache_read_input_tokens": Known(),
                           "cache_creation_input_tokens": Known()}
    assert done.cost_nanos == Known(2, 300_000_000)
    assert done.wait_us == Known(2, 1_000_001)
    assert done.wait_slots == [1, 1] + [0] * (WAIT_SLOTS - 2)  # 0.5 s is in le="0.5"
    assert failed.tokens["cache_creation_input_tokens"] == Known(1, 7)
    assert failed.cost_nanos == Known(1, 0)  # a known zero cost still counts
    assert failed.wait_slots[-1] == 1  # past the last bound: +Inf only
    assert token_sums(totals) == {("impl", "m", "cache_creation_input_tokens"): 7,
                                  ("impl", "m", "input_tokens"): 15,
                                  ("impl", "m", "output_tokens"): 0}
    assert cost_nanos(totals) == {("impl", "m"): 300_000_000}
    [waits] = wait_histograms(totals)
    assert waits.task_type == "impl" and waits.cumulative_counts[-1] == 3
    assert waits.cumulative_counts[:2] == [1, 2]
    assert waits.sum_seconds == pytest.approx(10 ** 6 + 1.000001)
    assert len(waits.cumulative_counts) == len(WAIT_BOUNDS_SECONDS) + 1


def test_sums_stay_exact_past_float_and_int64() -> None:
    """40 records of the most tokens and the highest cost a record may hold: the token
    sum is past 2**53 (where floats round) and the nano-dollar sum past int64."""
    raws = [record(f"big{n}", input_tokens=2 ** 53 - n, cost_usd=1e9,
                   duration_seconds=1e8 - n) for n in range(40)]
    totals = both_ways(raws)
    entry = totals.entries[("impl", "m", "completed")]
    assert entry.tokens["input_tokens"] == Known(40, 40 * 2 ** 53 - sum(range(40)))
    assert entry.cost_nanos == Known(40, 40 * 10 ** 18)
    assert entry.cost_nanos.total > 2 ** 64  # more than orjson writes as a number
    assert entry.duration_us == sum((10 ** 8 - n) * 10 ** 6 for n in range(40))
    assert through_json(totals) == totals


OLD_CARRIED = [
    {"task_type": "impl", "model": "m", "status": "completed", "count": 4,
     "duration_us": 9_000_000, "slots": [1, 3] + [0] * (SLOTS - 2)},
    {"task_type": "spec", "model": "other-model", "status": "failed", "count": 1,
     "duration_us": 7_200_000_000, "slots": [0] * (SLOTS - 1) + [1]},
]
"""Carried totals as the previous version wrote them: no tokens, costs or waits."""


def test_carried_totals_of_the_previous_version_read_as_zeros() -> None:
    carried = Totals.from_json(OLD_CARRIED)
    entry = carried.entries[("impl", "m", "completed")]
    assert (entry.count, entry.duration_us) == (4, 9_000_000)
    assert entry.tokens == Entry().tokens
    assert entry.cost_nanos == entry.wait_us == Known()
    assert entry.wait_slots == [0] * WAIT_SLOTS
    assert carried.to_json() == OLD_CARRIED  # nothing new to write for them
    store = both_ways([record("a", input_tokens=3, cost_usd=1.5, wait_seconds=2)])
    total = store.merged(carried)
    assert finished_counts(total) == {("impl", "m", "completed"): 5,
                                      ("spec", "other-model", "failed"): 1}
    assert token_sums(total) == {("impl", "m", "input_tokens"): 3}
    assert cost_nanos(total) == {("impl", "m"): 1_500_000_000}
    assert [h.task_type for h in wait_histograms(total)] == ["impl"]
    assert through_json(total) == total


@pytest.mark.parametrize("change", [
    {"tokens": [1, 2]},
    {"tokens": {"input_tokens": {"count": "x", "sum": 1}}},
    {"cost_nanos": 5},
    {"wait_us": {"count": 1, "sum": 2, "slots": [1]}},
    {"wait_us": [1, 2]},
])
def test_unreadable_carried_totals_are_logged_and_ignored(change, caplog) -> None:
    written = both_ways([record("a", input_tokens=3, cost_usd=1.5, wait_seconds=2)]).to_json()
    with caplog.at_level(logging.ERROR):
        assert Totals.from_json([{**written[0], **change}]) == Totals()
    assert "unreadable carried-over totals" in caplog.text


def test_relabeled_and_merged_carry_every_part() -> None:
    raws = spread(1500, usage_share=0.7)
    first, second = both_ways(raws[:600]), both_ways(raws[600:])
    assert first.merged(second) == both_ways(raws)
    one_model = both_ways([{**raw, "model": "any"} for raw in raws])
    assert both_ways(raws).relabeled(lambda labels: (labels[0], "any", labels[2])) == one_model
    assert sum(token_sums(one_model).values()) == sum(token_sums(both_ways(raws)).values())


def test_running_totals_take_in_only_what_was_added_and_equal_a_full_count(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metric_totals, "ROWS_AT_ONCE", 64)  # several runs per call
    raws = spread(600, usage_share=0.5)
    ordered = sorted(raws[:400], key=lambda raw: raw["created_at"])
    late = raws[400:]  # spread over the same days: most land before the last record
    columns, running = RecordColumns(), RunningTotals()
    for start in range(0, len(ordered), 100):
        batch = ordered[start:start + 100]
        columns.add(decode_batch(np.arange(len(batch), dtype=np.int64), batch))
        generation = columns.generation
        assert running.of(columns) == Totals.from_columns(columns)
        assert columns.generation == generation  # appended in time order: summed on
    columns.add(decode_batch(np.arange(len(late), dtype=np.int64), late))
    assert columns.generation > generation  # inserted in place: summed again
    assert running.of(columns) == Totals.from_columns(columns) == both_ways(ordered + late)
    assert running.of(RecordColumns()) == Totals()  # columns read afresh
