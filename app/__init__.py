"""The agent service and its runner.

Importing the package, as every ``import app.runner...`` does, loads nothing of the
service: a runner is installed without the service's dependencies. The app factory is
in :mod:`app.factory`.
"""
from __future__ import annotations

# First: the imports below may not even import on a Python this refuses.
from app.python_version import require_supported_python

require_supported_python()

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app (:func:`app.factory.create_app`). Imported here when called, so
    that ``from app import create_app`` and ``gunicorn 'app:create_app()'`` work and
    ``import app`` stays light."""
    from app.factory import create_app as build_app

    return build_app(test_config)
