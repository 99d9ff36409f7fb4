"""A real nginx running the shipped configuration (scripts/nginx/) on a free port of
127.0.0.1, in front of a given upstream, with everything it writes in one folder."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_process

SHIPPED = ROOT / "scripts" / "nginx"
SERVER_NAME = "agent.example.com"
SHIPPED_UPSTREAM = "127.0.0.1:8000"

MAIN_CONF = """\
{user}daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {shipped}/agent-service-http.conf;
    include {work}/agent-service.conf;
}}
"""
"""The least an nginx needs around the shipped files, as Debian's nginx.conf has them
inside ``http { }``."""


def nginx_binary() -> str:
    """Where nginx is; skips without it, except with CI=true, where it fails."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("nginx is not installed; CI must install it (apt-get install nginx)")
    pytest.skip("nginx is not installed (apt-get install nginx); CI installs it")


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    replaced, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1, f"expected exactly one {pattern!r} in the shipped server block"
    return replaced


def server_block(port: int, upstream: str) -> str:
    """The shipped server block, listening on 127.0.0.1:``port``, proxying to ``upstream``
    (host:port); its server_name stays, so clients send ``Host: agent.example.com``."""
    text = (SHIPPED / "agent-service.conf").read_text()
    text = _replace_once(text, r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{port};")
    return _replace_once(text, rf"^(\s*)server {re.escape(SHIPPED_UPSTREAM)};",
                         rf"\g<1>server {upstream};")


class NginxProxy:
    """``nginx`` in the foreground, its configuration, logs and temp files in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, upstream: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.upstream = upstream
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.error_log = workdir / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "NginxProxy":
        (self.workdir / "agent-service.conf").write_text(server_block(self.port, self.upstream))
        # Started by root, nginx's workers would run as nobody, who cannot enter a pytest
        # temp folder: they could not write the temp files of bodies and exports.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = self.workdir / "nginx.conf"
        conf.write_text(MAIN_CONF.format(user=user, work=self.workdir, shipped=SHIPPED))
        with open(self.workdir / "nginx.out", "wb") as out:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.workdir), "-c", str(conf), "-e", str(self.error_log)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:  # not listening yet
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen in 10 s: {self.logs()}")

    def logs(self) -> str:
        return "".join(path.read_text() for path in (self.workdir / "nginx.out", self.error_log)
                       if path.exists())

    def stop(self) -> None:
        stop_process(self.process, grace_seconds=10)
