"""Two-sample statistics of an A/B comparison: pure functions over numpy arrays.

scipy is imported on first use, inside the functions, so that a worker that never
compares does not load it. Every test is two-sided; each answers an :class:`Outcome`
(its p-value and which way ``b`` leans), or None when an arm has fewer than
``MIN_PER_ARM`` values.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

ALPHA = 0.05
"""The significance level of the verdicts."""
CONFIDENCE = 0.95
"""The level of the success rates' intervals."""
MIN_PER_ARM = 2

B_BETTER, B_WORSE = "b better", "b worse"
NO_DIFFERENCE, NOT_ENOUGH_DATA = "no significant difference", "not enough data"
VERDICTS = (B_BETTER, B_WORSE, NO_DIFFERENCE, NOT_ENOUGH_DATA)


class Outcome(NamedTuple):
    """A test's answer. ``p_value`` is None when the data leave it undefined (every value
    the same in both arms, so nothing to test: no difference seen); ``b_leans`` is +1
    when b's values tend to be higher than a's, -1 lower, 0 neither."""

    p_value: float | None
    b_leans: int


def _scipy_stats() -> Any:
    """``scipy.stats``, imported on first use (scipy ships no type information)."""
    from scipy import stats  # type: ignore[import-untyped]

    return stats


def _enough(*samples: np.ndarray) -> bool:
    return all(len(sample) >= MIN_PER_ARM for sample in samples)


def _outcome(p_value: float, b_leans: float) -> Outcome:
    return Outcome(None if np.isnan(p_value) else float(p_value),
                   0 if np.isnan(b_leans) else int(np.sign(b_leans)))


def wilson_interval(successes: int, trials: int) -> tuple[float, float] | None:
    """The Wilson score interval of a success rate at ``CONFIDENCE``; None without
    trials."""
    if trials == 0:
        return None
    test = _scipy_stats().binomtest(successes, trials)
    interval = test.proportion_ci(CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def fisher_exact_test(a_completed: np.ndarray, b_completed: np.ndarray) -> Outcome | None:
    """Fisher's exact test of the 2x2 table completed/failed by arm (boolean arrays)."""
    if not _enough(a_completed, b_completed):
        return None
    a_done, b_done = int(a_completed.sum()), int(b_completed.sum())
    table = [[a_done, len(a_completed) - a_done], [b_done, len(b_completed) - b_done]]
    result = _scipy_stats().fisher_exact(table, alternative="two-sided")
    return _outcome(result.pvalue, b_done / len(b_completed) - a_done / len(a_completed))


def mann_whitney_test(a: np.ndarray, b: np.ndarray) -> Outcome | None:
    """The Mann-Whitney U test by its normal approximation, corrected for ties and for
    continuity (durations repeat, so the exact distribution does not apply)."""
    if not _enough(a, b):
        return None
    result = _scipy_stats().mannwhitneyu(b, a, alternative="two-sided", method="asymptotic")
    # U of b: above half of all pairs, b's values tend to be the higher ones.
    return _outcome(result.pvalue, result.statistic - len(a) * len(b) / 2)


def welch_t_test(a: np.ndarray, b: np.ndarray) -> Outcome | None:
    """Welch's t-test (unequal variances) of the means."""
    if not _enough(a, b):
        return None
    result = _scipy_stats().ttest_ind(b, a, equal_var=False)
    return _outcome(result.pvalue, float(np.mean(b) - np.mean(a)))


def verdict(outcome: Outcome | None, *, higher_is_better: bool) -> str:
    """b better or worse at ``ALPHA``, no significant difference, or not enough data."""
    if outcome is None:
        return NOT_ENOUGH_DATA
    if outcome.p_value is None or outcome.p_value >= ALPHA or outcome.b_leans == 0:
        return NO_DIFFERENCE
    return B_BETTER if (outcome.b_leans > 0) == higher_is_better else B_WORSE
