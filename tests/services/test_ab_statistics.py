"""The statistics of an A/B comparison: which way each test leans, when it cannot say,
and that scipy is loaded only by a comparison."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from app.services import ab_statistics as stats
from tests.support import ROOT

FASTER, SLOWER = np.array([10, 11, 12, 13, 14, 15]), np.array([30, 31, 32, 33, 34, 35])


@pytest.mark.parametrize(("test", "a", "b", "higher_is_better", "verdict"), [
    (stats.mann_whitney_test, SLOWER, FASTER, False, stats.B_BETTER),
    (stats.mann_whitney_test, FASTER, SLOWER, False, stats.B_WORSE),
    (stats.welch_t_test, SLOWER / 100, FASTER / 100, False, stats.B_BETTER),
    (stats.welch_t_test, FASTER / 100, SLOWER / 100, False, stats.B_WORSE),
    (stats.fisher_exact_test, np.arange(12) < 2, np.arange(12) < 11, True, stats.B_BETTER),
    (stats.fisher_exact_test, np.arange(12) < 11, np.arange(12) < 2, True, stats.B_WORSE),
    (stats.mann_whitney_test, FASTER, FASTER[::-1], False, stats.NO_DIFFERENCE),
])
def test_each_test_says_which_way_b_leans(test, a, b, higher_is_better, verdict) -> None:
    outcome = test(a, b)
    assert stats.verdict(outcome, higher_is_better=higher_is_better) == verdict


@pytest.mark.parametrize("test", [stats.mann_whitney_test, stats.welch_t_test,
                                  stats.fisher_exact_test])
@pytest.mark.parametrize("sizes", [(0, 5), (1, 5), (5, 1), (0, 0)])
def test_fewer_than_two_values_in_an_arm_is_not_enough_data(test, sizes) -> None:
    a, b = (np.ones(size, dtype=bool) for size in sizes)
    assert test(a, b) is None
    assert stats.verdict(None, higher_is_better=True) == stats.NOT_ENOUGH_DATA


def test_the_same_value_everywhere_leaves_the_p_value_undefined_and_no_difference() -> None:
    outcome = stats.welch_t_test(np.full(4, 0.25), np.full(3, 0.25))
    assert outcome == stats.Outcome(None, 0)
    assert stats.verdict(outcome, higher_is_better=False) == stats.NO_DIFFERENCE


def test_different_constants_are_a_certain_difference() -> None:
    outcome = stats.welch_t_test(np.full(4, 0.25), np.full(3, 0.5))
    assert outcome == stats.Outcome(0.0, 1)
    assert stats.verdict(outcome, higher_is_better=False) == stats.B_WORSE


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    # Wilson's interval, computed by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    (0, 10, 0.0, 0.27753),
    (10, 10, 0.72247, 1.0),
    (7, 10, 0.39678, 0.89221),
    (1, 1, 0.20655, 1.0),
])
def test_the_wilson_interval(successes, trials, low, high) -> None:
    assert stats.wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-5)


def test_no_trials_no_interval() -> None:
    assert stats.wilson_interval(0, 0) is None


def test_scipy_is_loaded_by_a_comparison_only() -> None:
    """A worker that builds the app and serves the other routes never imports scipy."""
    script = (
        "import sys, tempfile\n"
        "from app import create_app\n"
        "app = create_app({'AGENT_LOGS_DIR': tempfile.mkdtemp()})\n"
        "client = app.test_client()\n"
        "assert client.get('/api/agent/metrics').status_code == 200\n"
        "assert client.get('/dashboard').status_code == 200\n"
        "assert 'scipy' not in sys.modules, 'scipy imported before a comparison'\n"
        "assert client.get('/api/agent/metrics/compare?by=model&a=x&b=y').status_code == 200\n"
        "assert 'scipy' not in sys.modules, 'scipy imported for an empty comparison'\n"
        "from app.services.ab_statistics import wilson_interval\n"
        "wilson_interval(1, 2)\n"
        "assert 'scipy' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
