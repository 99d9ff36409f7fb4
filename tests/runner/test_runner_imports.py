"""The runner imports nothing of the service, so that it runs where only its own
requirements are installed (``pip install`` without the ``server`` extra)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

SERVICE_MODULES = ("flask", "werkzeug", "numpy", "marshmallow", "apispec", "orjson",
                   "psycopg", "psycopg_pool", "filelock", "prometheus_client", "gunicorn",
                   "app.factory")


@pytest.mark.parametrize("module", ["app.runner.cli", "app.smoke"])
def test_the_runner_and_the_smoke_test_load_nothing_of_the_service(module: str):
    """In a fresh interpreter, since this one has the service loaded already."""
    shown = subprocess.run(
        [sys.executable, "-c",
         f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(shown.stdout))
    assert module in loaded
    assert not loaded & set(SERVICE_MODULES)
