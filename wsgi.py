"""WSGI entry point: ``gunicorn wsgi:app`` (and ``flask --app wsgi ...``).

A setting that cannot be used ends the process with one line saying which.
"""
import logging

from app import create_app
from app.shared_settings import exit_on_config_error

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
with exit_on_config_error("agent-metrics-service"):
    app = create_app()
