"""What ``gunicorn.conf.py`` serves with: the server's settings, checked before it starts,
and the worker that answers gunicorn's own refusals as the API answers its errors.

Every setting the app reads is checked here too, and the routing file is read, so a
server with a setting it cannot use stops at once with one line saying which, instead
of starting and failing later.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import dataclass

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from app import config
from app.access.token_file import TokenFile
from app.services.routing import load_routing

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 16
"""Threads per worker: a slow client holds one thread, not the worker."""
LIMIT_REQUEST_LINE = 8190
"""The longest request line gunicorn reads (its most; its default is 4094): a long path
or query string reaches the app, which says what is wrong with it (a task id of more
than 200 characters is 422). Beyond it, gunicorn answers 400 itself, as JSON too."""


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, with the API's error body: ``{"detail": ...}``."""
    body = json.dumps({"detail": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, whose answers to the requests gunicorn refuses before
    the app sees them (a request line or headers too large, a malformed request) are
    JSON like every error of the API, not gunicorn's HTML page."""

    def init_process(self) -> None:
        # Every worker writes those answers through util.write_error (it is not a hook of
        # gunicorn's); this process only runs workers of this class.
        util.write_error = write_json_error
        super().init_process()


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
    cannot be used, including a malformed ``AGENT_API_TOKENS_FILE`` and a non-loopback
    ``AGENT_BIND`` without any token configured."""
    env = os.environ if environ is None else environ
    app_settings = config.from_env(env)
    load_routing(app_settings["AGENT_ROUTING_FILE"])
    bind = env.get("AGENT_BIND") or DEFAULT_BIND
    tokens_file = app_settings["AGENT_API_TOKENS_FILE"]
    if tokens_file:
        TokenFile(tokens_file)  # a malformed file stops the start here, in one line
    if not is_loopback(bind) and not (app_settings["AGENT_API_TOKEN"] or tokens_file):
        raise config.ConfigError(
            f"AGENT_BIND={bind} is beyond this machine and no token is configured: anyone "
            "who reaches it could make the runners run commands; set AGENT_API_TOKENS_FILE "
            "or AGENT_API_TOKEN (README: Security and deployment) or bind to 127.0.0.1")
    workers = DEFAULT_WORKERS
    if env.get("AGENT_WORKERS"):
        workers = config.whole_number(env, "AGENT_WORKERS", 1, 64)
    threads = DEFAULT_THREADS
    if env.get("AGENT_THREADS"):
        threads = config.whole_number(env, "AGENT_THREADS", 1, 256)
    return ServerSettings(bind, workers, threads)
