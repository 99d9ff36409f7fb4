"""The service's app factory: the Flask app with its stores, services, guards, commands
and routes. ``app.create_app`` imports it on first use, so that importing the ``app``
package (as the runner does) loads none of this."""
from __future__ import annotations

from functools import cache, partial
from typing import Any

from flask import Flask

from app import cli, config, security
from app.access.token_commands import tokens_cli
from app.clock import utc_now
from app.errors import register_error_handlers
from app.routers.access import bp as access_bp
from app.routers.agent import bp as agent_bp
from app.routers.compare import bp as compare_bp
from app.routers.dashboard import bp as dashboard_bp
from app.routers.prometheus import bp as prometheus_bp
from app.routers.system import bp as system_bp
from app.services import Services
from app.services.metrics_service import MetricsService
from app.services.routing import load_routing
from app.services.task_service import TaskService
from app.storage.backends import open_stores


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: configuration from the environment, then ``test_config`` over it.

    Besides the environment variables (see README), tests may pass ``CLOCK``: a
    callable returning an aware datetime, used for every timestamp and window.
    """
    # Named after the package: its logger is ``app``, its templates app/templates.
    app = Flask("app")
    app.config.from_mapping(config.from_env(), CLOCK=utc_now)
    if test_config:
        app.config.from_mapping(test_config)
    clock = app.config["CLOCK"]
    task_store, metric_store = open_stores(app.config)
    metrics = MetricsService(metric_store, clock=clock,
                             window_days=app.config["METRICS_WINDOW_DAYS"])
    tasks = TaskService(
        task_store,
        # Read on first use, so that commands that need no routing (``metrics show``)
        # work with any routing file; a server checks it before it starts (app.serving).
        routing=cache(partial(load_routing, app.config["AGENT_ROUTING_FILE"])),
        metrics=metrics,
        clock=clock,
        max_attempts=app.config["AGENT_MAX_ATTEMPTS"],
    )
    app.extensions["agent"] = Services(tasks=tasks, metrics=metrics)

    register_error_handlers(app)
    security.init_app(app)
    cli.init_app(app)
    app.cli.add_command(tokens_cli)
    app.register_blueprint(access_bp)
    app.register_blueprint(agent_bp)
    app.register_blueprint(compare_bp)
    app.register_blueprint(system_bp)
    app.register_blueprint(prometheus_bp)
    app.register_blueprint(dashboard_bp)
    return app
