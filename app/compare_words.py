"""An A/B comparison (see :func:`app.services.metrics_compare.compare`) in words, for the
page: which arm is better at what, by how much, and how sure one can be of it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from app.services.ab_statistics import ALPHA, MIN_PER_ARM, NOT_ENOUGH_DATA

SMALL_ARM = 20
"""Below this many tasks in an arm the page warns: with 20 tasks a side, even a
30-point gap in success rate is often not significant at 5%."""
ARMS = ("a", "b")


class Finding(NamedTuple):
    aspect: str
    verdict: str
    headline: str
    """How the arms differ, with their numbers."""
    confidence: str
    """The p-value in words."""


def percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


def points(rate: float) -> str:
    """A difference of rates in percentage points."""
    return f"{rate * 100:.0f} points"


def seconds(value: float) -> str:
    """A duration as the dashboard's tiles show one: ``61 s``."""
    return f"{value:g} s"


def dollars(amount: float | None) -> str:
    if amount is None:
        return "—"
    return f"${amount:.3g}" if amount < 1 else f"${amount:,.2f}"


def signed(delta: float | None, shown: Callable[[float], str]) -> str:
    """A difference b - a, its size as ``shown`` says, with its sign; a dash if None."""
    if delta is None:
        return "—"
    return f"{'+' if delta > 0 else '−' if delta < 0 else ''}{shown(abs(delta))}"


def _success(a: dict[str, Any], b: dict[str, Any]) -> str:
    points = round(abs(b["success_rate"] - a["success_rate"]) * 100)
    shown = f"{percent(b['success_rate'])} vs {percent(a['success_rate'])}"
    if points == 0:
        return f"a and b succeed about as often: {shown}"
    more = "more" if b["success_rate"] > a["success_rate"] else "less"
    return f"b succeeds {points} point{'s' if points != 1 else ''} {more} often: {shown}"


def _duration(a: dict[str, Any], b: dict[str, Any]) -> str:
    gap = b["p50_seconds"] - a["p50_seconds"]
    if gap == 0:
        return f"a and b take the same at the median: {seconds(a['p50_seconds'])}"
    return (f"b takes {seconds(abs(gap))} {'longer' if gap > 0 else 'less'} at the "
            f"median: {seconds(b['p50_seconds'])} vs {seconds(a['p50_seconds'])}")


def _cost(a: dict[str, Any], b: dict[str, Any]) -> str:
    gap = b["avg_cost_usd"] - a["avg_cost_usd"]
    shown = f"{dollars(b['avg_cost_usd'])} vs {dollars(a['avg_cost_usd'])}"
    if gap == 0:
        return f"a and b cost the same per task on average: {shown}"
    more = "more" if gap > 0 else "less"
    return f"b costs {dollars(abs(gap))} {more} per task on average: {shown}"


ASPECTS = (
    # its verdict, its difference, the arm's count of values tested, what they are, headline
    ("success", "success_rate", "n", "tasks", _success),
    ("duration", "p50_seconds", "n", "tasks", _duration),
    ("cost", "avg_cost_usd", "n_with_cost", "tasks with a known cost", _cost),
)


def _p_value(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _confidence(verdict: str, p_value: float | None, counted: str, what: str,
                comparison: dict[str, Any]) -> str:
    if verdict == NOT_ENOUGH_DATA:
        return (f"not enough data: each arm needs at least {MIN_PER_ARM} {what} (a has "
                f"{comparison['a'][counted]}, b has {comparison['b'][counted]})")
    if p_value is None:
        return "nothing to test: every value is the same in both arms"
    if p_value < ALPHA:
        return f"significant at {ALPHA:.0%} ({_p_value(p_value)})"
    return f"could be noise ({_p_value(p_value)})"


def findings(comparison: dict[str, Any]) -> list[Finding]:
    """Success, duration and cost: each verdict, the numbers behind it and how sure."""
    a, b = comparison["a"], comparison["b"]
    found = []
    for aspect, difference_key, counted, what, headline in ASPECTS:
        verdict = comparison["verdict"][aspect]
        difference = comparison["difference"][difference_key]
        found.append(Finding(
            aspect,
            verdict,
            f"nothing to compare: a has {a[counted]} {what}, b has {b[counted]}"
            if difference["delta"] is None else headline(a, b),
            _confidence(verdict, difference["p_value"], counted, what, comparison),
        ))
    return found


def warnings(comparison: dict[str, Any]) -> list[str]:
    """What makes the comparison weak: an arm without tasks or with few, unknown costs."""
    found = []
    for name in ARMS:
        arm = comparison[name]
        label = f"{name} ({arm['value']})"
        if arm["n"] == 0:
            found.append(f"{label} has no tasks in this window: check the value, the task "
                         "type and the window.")
        elif arm["n"] < SMALL_ARM:
            found.append(f"{label} has only {arm['n']} task{'s' if arm['n'] != 1 else ''}: "
                         f"only a large difference can show as significant (aim for at "
                         f"least {SMALL_ARM} per arm).")
        if 0 < arm["n"] and arm["n_with_cost"] < arm["n"]:
            found.append(f"The cost of {label} is known for {arm['n_with_cost']} of its "
                         f"{arm['n']} tasks: its average is over those only.")
    return found
