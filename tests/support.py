"""Helpers shared by the tests: a movable clock and a real gunicorn server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import requests
from flask import Flask

from app import create_app
from app.clock import utc_now
from app.services.metrics_service import MetricsService
from app.storage.jsonl_metrics import JsonlMetricStore

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_seconds``."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GunicornServer:
    """``gunicorn wsgi:app`` in its own process, on a free port."""

    def __init__(self, logs_dir: Path, *, workers: int = 2, env: dict[str, str] | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AGENT_LOGS_DIR": str(logs_dir), **(env or {})}
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(logs_dir) / "gunicorn.out"

    def start(self, timeout: float = 30) -> "GunicornServer":
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                 "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                 "wsgi:app"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()}")
            try:
                requests.get(f"{self.base_url}/api/agent/route?task_type=spec", timeout=1)
                return self
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start in {timeout:g} s")

    def worker_pids(self) -> set[int]:
        assert self.process is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def stop(self) -> None:
        stop_process(self.process, grace_seconds=15)


def jsonl_metrics(path: Path, clock: Callable[[], datetime] | None = None, *,
                  fsync: bool = False) -> MetricsService:
    """A metrics service on the JSONL store at ``path``."""
    return MetricsService(JsonlMetricStore(path, fsync=fsync), clock=clock or utc_now)


_open_apps: list[Flask] = []


def open_app(settings: dict[str, object]) -> Flask:
    """``create_app(settings)``, whose store files and database connections are let go
    when the test ends (conftest). Left to the garbage collector, a database pool whose
    connections are still opening in the background can be collected on one of its own
    threads, which cannot stop themselves, and pytest reports that as an error of
    whichever test runs then."""
    made = create_app(settings)
    _open_apps.append(made)
    return made


def close_open_apps() -> None:
    while _open_apps:
        services = _open_apps.pop().extensions["agent"]
        for service in (services.tasks, services.metrics):
            service.close_files()


def jsonl(lines: Iterable[object]) -> bytes:
    """``lines`` as the bytes of a JSONL file, one line each."""
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)
