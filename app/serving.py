"""What ``gunicorn.conf.py`` serves with: the server's settings, checked before it starts.

Every setting the app reads is checked here too, and the routing file is read, so a
server with a setting it cannot use stops at once with one line saying which, instead
of starting and failing later.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from app import config
from app.services.routing import load_routing

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 16
"""Threads per worker: a slow client holds one thread, not the worker."""


@dataclass(frozen=True)
class ServerSettings:
    bind: str
    workers: int
    threads: int


def is_loopback(bind: str) -> bool:
    """Whether a gunicorn bind address is reachable from this machine only."""
    if bind.startswith("unix:"):
        return True
    host = config.host_without_port(bind)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_settings(environ: dict[str, str] | None = None) -> ServerSettings:
    """The settings to serve with; :class:`app.config.ConfigError` for any setting that
    cannot be used, including a non-loopback ``AGENT_BIND`` without ``AGENT_API_TOKEN``."""
    env = os.environ if environ is None else environ
    app_settings = config.from_env(env)
    load_routing(app_settings["AGENT_ROUTING_FILE"])
    bind = env.get("AGENT_BIND") or DEFAULT_BIND
    if not is_loopback(bind) and not app_settings["AGENT_API_TOKEN"]:
        raise config.ConfigError(
            f"AGENT_BIND={bind} is beyond this machine and AGENT_API_TOKEN is unset: anyone "
            "who reaches it could make the runners run commands; set AGENT_API_TOKEN "
            "(README: Security and deployment) or bind to 127.0.0.1")
    workers = DEFAULT_WORKERS
    if env.get("AGENT_WORKERS"):
        workers = config.whole_number(env, "AGENT_WORKERS", 1, 64)
    threads = DEFAULT_THREADS
    if env.get("AGENT_THREADS"):
        threads = config.whole_number(env, "AGENT_THREADS", 1, 256)
    return ServerSettings(bind, workers, threads)
