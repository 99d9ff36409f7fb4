"""Real servers on this machine for the benchmarks and the tests: gunicorn serving
``wsgi:app`` on a free port, and the environment of a runner process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "scripts" / "agent_runner.py"


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


def runner_env(base_url: str, logs_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a runner of the service whose stores are in ``logs_dir``. The
    runner needs only the API; its own folder is ``runner`` beside ``logs_dir``."""
    return {**os.environ, "AGENT_API_BASE": base_url,
            "AGENT_RUNNER_DIR": str(logs_dir.parent / "runner"), **extra}
