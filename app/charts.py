"""Geometry of the dashboard's SVG charts, computed server-side.

The functions turn numbers into shapes (rectangles, polylines, ticks) in SVG user units;
``templates/dashboard.html`` only draws them. Nothing here divides by a count that can be
zero: an empty series draws an empty frame. The page's durations and times are written
by :func:`format_seconds` and :func:`format_time`, and the line shown of an output by
:func:`last_line`. Amounts in human units, for the page and for ``flask metrics show``:
:func:`human_seconds`, :func:`human_count` and :func:`human_dollars`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from app.clock import parse_iso

Point = dict[str, Any]
"""One bucket of ``metrics_series.timeseries``."""
Format = Callable[[float], str]

WIDTH, HEIGHT = 600, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 30
MAX_X_LABELS = 6
BAR_LABEL_ROOM = 48
"""Room right of the longest horizontal bar for the count written after it."""
Y_STEPS = 4
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 150, 300, 600, 900, 1800, 3600, 7200, 10800,
                  21600, 43200, 86400)
"""Axis steps for durations, in seconds, that read well as seconds, minutes or hours."""


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str
    label: str = ""


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    css_class: str
    points: str
    dots: list[Dot]


@dataclass
class Chart:
    """One chart: the plot area's corners, axis ticks, and the shapes inside."""

    css_id: str
    legend: list[tuple[str, str]]
    grid: str = "y"
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    top: float = TOP
    right: float = WIDTH - RIGHT
    bottom: float = HEIGHT - BOTTOM
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)

    def x_center(self, index: int, count: int) -> float:
        return self.left + (index + 0.5) * (self.right - self.left) / count

    def y_of(self, value: float, top_value: float) -> float:
        return self.bottom - value / top_value * (self.bottom - self.top)


def format_seconds(seconds: float) -> str:
    """A duration for an axis: ``45s``, ``2.5m``, ``1.5h``."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    if seconds < 3600:
        return f"{seconds / 60:.3g}m"
    return f"{seconds / 3600:.3g}h"


def format_time(stamp: str) -> str:
    """A stored time for a table, to the minute in UTC: ``Mar 01 14:05``."""
    return parse_iso(stamp).astimezone(timezone.utc).strftime("%b %d %H:%M")


def last_line(text: str | None) -> str:
    """The last line of an output that is not blank, where a failure usually says why."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _rounded(value: float) -> str:
    """A number of a unit: one decimal below 10 (none when it is 0), whole above."""
    shown = f"{value:.1f}" if round(value, 1) < 10 else f"{value:.0f}"
    return shown[:-2] if shown.endswith(".0") else shown


def human_seconds(seconds: float) -> str:
    """A duration for people, rounded in the largest unit it has one of: ``0.4 s``,
    ``42 s``, ``3.5 min``, ``2 h``, ``1.5 d``."""
    for divisor, name, next_unit in ((1, "s", 60), (60, "min", 60), (3600, "h", 24)):
        shown = _rounded(seconds / divisor)
        if float(shown) < next_unit:
            return f"{shown} {name}"
    return f"{_rounded(seconds / 86400)} d"


def human_count(count: float) -> str:
    """A count such as tokens, rounded: ``950``, ``12k``, ``1.2M``, ``3B``."""
    if round(count) < 1000:
        return f"{count:.0f}"
    for divisor, name in ((1000, "k"), (1000 ** 2, "M")):
        shown = _rounded(count / divisor)
        if float(shown) < 1000:
            return shown + name
    return _rounded(count / 1000 ** 3) + "B"


def human_dollars(amount: float) -> str:
    """An amount in USD, to the cent (``$12.34``, ``$1,234.50``); below a cent, to two
    significant digits (``$0.0042``) rather than ``$0.00``."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    digits = 1 - math.floor(math.log10(abs(amount)))
    return f"${amount:.{digits}f}".rstrip("0")


def nice_step(largest: float) -> float:
    """A step of 1, 2 or 5 times a power of ten (at least 1) such that ``Y_STEPS`` steps
    cover ``largest``."""
    if largest <= 0:
        return 1.0
    raw = largest / Y_STEPS
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return max(step, 1.0)


def _bucket_label(start: datetime, bucket: str) -> str:
    return start.strftime("%b %d %H:00" if bucket == "hour" else "%b %d")


def _frame(css_id: str, legend: list[tuple[str, str]], series: list[Point],
           bucket: str, top_value: float, y_label: Format) -> Chart:
    chart = Chart(css_id=css_id, legend=legend)
    count = len(series)
    stride = max(1, math.ceil(count / MAX_X_LABELS))
    chart.x_ticks = [
        Tick(chart.x_center(index, count),
             _bucket_label(datetime.fromisoformat(point["start"]), bucket))
        for index, point in enumerate(series) if index % stride == 0
    ]
    chart.y_ticks = [
        Tick(chart.y_of(top_value * step / Y_STEPS, top_value),
             y_label(top_value * step / Y_STEPS))
        for step in range(Y_STEPS + 1)
    ]
    return chart


def finished_chart(series: list[Point], bucket: str) -> Chart:
    """Completed and failed tasks per bucket, as stacked bars."""
    step = nice_step(max((p["completed"] + p["failed"] for p in series), default=0))
    top_value = step * Y_STEPS
    chart = _frame("finished", [("completed", "completed"), ("failed", "failed")],
                   series, bucket, top_value, lambda value: f"{value:g}")
    slot = (chart.right - chart.left) / max(len(series), 1)
    width = max(slot * 0.8, 1.0)
    for index, point in enumerate(series):
        x = chart.x_center(index, len(series)) - width / 2
        base = chart.bottom
        for status in ("completed", "failed"):
            if point[status]:
                y = chart.y_of(point[status], top_value) - (chart.bottom - base)
                chart.rects.append(Rect(x, y, width, base - y, status,
                                        f"{point['start']}: {point[status]} {status}"))
                base = y
    return chart


def _line(chart: Chart, css_class: str, series: list[Point], value_of: Callable[[Point], float],
          top_value: float, label: Format) -> Line:
    dots = [
        Dot(chart.x_center(index, len(series)), chart.y_of(value_of(point), top_value),
            f"{point['start']}: {label(value_of(point))}")
        for index, point in enumerate(series) if point["completed"] + point["failed"]
    ]
    points = " ".join(f"{dot.x:.1f},{dot.y:.1f}" for dot in dots)
    return Line(css_class, points, dots)


def success_chart(series: list[Point], bucket: str) -> Chart:
    """Success rate (percent) of the buckets that have records."""
    chart = _frame("success", [("rate", "success rate")], series, bucket, 100.0,
                   lambda value: f"{value:g}%")

    def rate(point: Point) -> float:
        return 100.0 * point["completed"] / (point["completed"] + point["failed"])

    chart.lines.append(_line(chart, "rate", series, rate, 100.0, lambda v: f"{v:.0f}%"))
    return chart


def duration_chart(series: list[Point], bucket: str) -> Chart:
    """p50 and p95 execution time of the buckets that have records."""
    largest = max((p["p95_seconds"] for p in series), default=0)
    step = next((s for s in DURATION_STEPS if s * Y_STEPS >= largest), None)
    top_value = (step or nice_step(largest)) * Y_STEPS
    chart = _frame("durations", [("p50", "p50"), ("p95", "p95")], series, bucket,
                   top_value, format_seconds)
    for key in ("p95", "p50"):
        chart.lines.append(_line(chart, key, series, itemgetter(f"{key}_seconds"),
                                 top_value, lambda v: f"{v:g} s"))
    return chart


def queue_chart(counts: dict[str, int], statuses: tuple[str, ...]) -> Chart:
    """How many tasks are in each of ``statuses`` (names of parts of the queue, keys of
    ``counts``), as horizontal bars, each with its count after it."""
    chart = Chart(css_id="queue", legend=[], grid="x", height=36 * len(statuses) + 28,
                  left=120, right=WIDTH - BAR_LABEL_ROOM, bottom=36 * len(statuses) + 8)
    step = nice_step(max((counts[s] for s in statuses), default=0))
    top_value = step * Y_STEPS
    span = chart.right - chart.left
    for index, status in enumerate(statuses):
        y = chart.top + index * 36
        chart.y_ticks.append(Tick(y + 13, status))
        length = counts[status] / top_value * span
        chart.rects.append(Rect(chart.left, y, length, 26, status,
                                f"{status}: {counts[status]}", str(counts[status])))
    chart.x_ticks = [
        Tick(chart.left + span * step_index / Y_STEPS, f"{top_value * step_index / Y_STEPS:g}")
        for step_index in range(Y_STEPS + 1)
    ]
    return chart
