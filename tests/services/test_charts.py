"""Chart geometry: axis steps, labels, and bars that stack to the right height."""
from __future__ import annotations

import pytest

from app import charts


@pytest.mark.parametrize("largest,step", [(0, 1), (1, 1), (4, 1), (5, 2), (39, 10), (41, 20),
                                          (2001, 1000)])
def test_nice_step_covers_the_largest_value(largest, step) -> None:
    assert charts.nice_step(largest) == step
    assert step * charts.Y_STEPS >= largest


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (45, "45s"), (90, "1.5m"), (5400, "1.5h")])
def test_format_seconds(seconds, text) -> None:
    assert charts.format_seconds(seconds) == text


def point(start: str, completed: int, failed: int, p50: float = 1.0, p95: float = 2.0) -> dict:
    return {"start": start, "completed": completed, "failed": failed,
            "p50_seconds": p50, "p95_seconds": p95}


def test_bars_stack_failed_on_completed() -> None:
    series = [point("2026-03-01T00:00:00+00:00", 6, 2), point("2026-03-02T00:00:00+00:00", 0, 0)]
    chart = charts.finished_chart(series, "day")
    assert [tick.label for tick in chart.y_ticks] == ["0", "2", "4", "6", "8"]
    completed, failed = chart.rects
    plot_height = chart.bottom - chart.top
    assert completed.height == pytest.approx(plot_height * 6 / 8)
    assert failed.height == pytest.approx(plot_height * 2 / 8)
    assert completed.y + completed.height == pytest.approx(chart.bottom)
    assert failed.y + failed.height == pytest.approx(completed.y)
    assert [tick.label for tick in chart.x_ticks] == ["Mar 01", "Mar 02"]


def test_lines_skip_empty_buckets_and_an_empty_series_draws_nothing() -> None:
    series = [point("2026-03-01T10:00:00+00:00", 1, 1, 30, 600),
              point("2026-03-01T11:00:00+00:00", 0, 0, 0, 0),
              point("2026-03-01T12:00:00+00:00", 0, 3, 5, 9)]
    success = charts.success_chart(series, "hour")
    [rate] = success.lines
    assert [dot.title for dot in rate.dots] == ["2026-03-01T10:00:00+00:00: 50%",
                                                "2026-03-01T12:00:00+00:00: 0%"]
    durations = charts.duration_chart(series, "hour")
    assert durations.y_ticks[-1].label == "10m"
    empty = [point("2026-03-01T10:00:00+00:00", 0, 0, 0, 0)]
    for build in (charts.finished_chart, charts.success_chart, charts.duration_chart):
        chart = build(empty, "hour")
        assert chart.rects == [] and all(line.dots == [] for line in chart.lines)
