"""A real PostgreSQL server for the tests and the benchmarks: its own cluster (initdb) in
a private folder under the system temp dir, listening on a free port of 127.0.0.1 and on
a unix socket in that folder, tuned for speed rather than durability."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

from bench.servers import free_port

DEBIAN_PREFIX = Path("/usr/lib/postgresql")

SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
}
"""Durability against power loss is worthless for a throw-away cluster, and every test would
pay for it. ``synchronous_commit`` stays on: with fsync off a commit only costs a write(2),
and turning it off would let ``kill`` lose transactions a client saw committed."""

HBA = """\
local all all trust
host all {superuser} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""
"""The superuser connects without a password; a role made by ``create_role`` must give its
password over TCP, so a client that drops it from a URL fails as it would in production."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's ``/usr/lib/postgresql/<version>/bin``
    of the highest version, else the one ``initdb`` is found in on PATH."""
    debian = [path for path in DEBIAN_PREFIX.glob("*") if (path / "bin" / "initdb").is_file()]
    if debian:
        return max(debian, key=_version_key) / "bin"
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    return None


def _unprivileged_user() -> str:
    """The account the server runs as when the tests run as root, which initdb and postgres
    refuse: the ``postgres`` user the Debian package creates, else ``nobody``."""
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, but there is no 'postgres' or 'nobody' user "
                       "to run PostgreSQL as")


def _as_user_prefix(user: str) -> list[str]:
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                "--init-groups", "--"]
    raise RuntimeError("running as root, but neither runuser nor setpriv is installed "
                       "to run PostgreSQL as an unprivileged user")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie nobody has reaped yet counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class PostgresServer:
    """One PostgreSQL cluster in a folder of its own, made by ``tempfile.mkdtemp`` in
    ``parent`` (the system temp dir by default) and removed by ``cleanup``.

    As root, the folder is handed to an unprivileged user (``os_user``) and initdb/pg_ctl run
    as that user; ``parent`` must then be traversable by it, which pytest's ``tmp_path``
    (under a mode-700 ``/tmp/pytest-of-root``) is not.
    """

    def __init__(self, bin_dir: Path, *, parent: Path | None = None,
                 superuser: str = "postgres", start_timeout: float = 60) -> None:
        self.bin_dir = bin_dir
        self.superuser = superuser
        self.start_timeout = start_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix="pytest-postgres-", dir=parent))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir
        self.log_path = self.base_dir / "postgres.log"
        self.port = free_port()
        self.os_user = _unprivileged_user() if os.geteuid() == 0 else None
        self._prefix = _as_user_prefix(self.os_user) if self.os_user else []
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self._initialized = False

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop("immediate")
            self.cleanup()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
        self.cleanup()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._prefix, *args], cwd=self.base_dir, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)

    def _failure(self, what: str, result: subprocess.CompletedProcess[str] | None) -> str:
        output = (result.stdout + result.stderr).strip() if result else ""
        try:
            log_tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except FileNotFoundError:
            log_tail = "(no log written)"
        return f"{what}\n--- output ---\n{output}\n--- {self.log_path} (tail) ---\n{log_tail}"

    def _initdb(self) -> None:
        result = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir),
                           "-U", self.superuser, "--auth=trust", "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        if result.returncode != 0:
            what = "initdb failed"
            if self.os_user:
                what += (f" (running as root, so as {self.os_user!r}, which must be able to "
                         f"reach {self.base_dir})")
            raise RuntimeError(self._failure(what, result))
        settings = {
            **SETTINGS,
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{name} = {value}\n" for name, value in settings.items()))
        (self.data_dir / "pg_hba.conf").write_text(HBA.format(superuser=self.superuser))
        self._initialized = True

    def start(self) -> "PostgresServer":
        """Creates the cluster on first use, starts the server and returns once it accepts
        connections on its port."""
        if not self._initialized:
            self._initdb()
        result = self._run(str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data_dir),
                           "-l", str(self.log_path), "-w", "-t", str(int(self.start_timeout)))
        if result.returncode != 0:
            raise RuntimeError(self._failure(f"pg_ctl start failed (port {self.port})", result))
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(self._failure(
                        f"PostgreSQL does not accept connections: {error}", None)) from error
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (smart, fast or immediate); nothing if it is not running."""
        if not self.is_running():
            return
        result = self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir),
                           "-m", mode, "-w", "-t", str(int(self.start_timeout)))
        if result.returncode != 0:
            raise RuntimeError(self._failure("pg_ctl stop failed", result))

    def restart(self, mode: str = "fast") -> "PostgresServer":
        """Stops and starts the server on the same port: open connections break, data stays."""
        self.stop(mode)
        return self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _pid_alive(pid)

    def kill(self) -> None:
        """SIGKILL to the server and its backends, as a crash would do; ``start`` then runs
        crash recovery."""
        pid = self.postmaster_pid()
        if pid is None or not _pid_alive(pid):
            return
        pids = [pid, *self._children(pid)]
        for each in pids:  # the postmaster first, so that it forks no more backends
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        while any(_pid_alive(each) for each in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {pids} survive SIGKILL")
            time.sleep(0.02)
        # Where no init process reaps orphans (some containers), the dead postmaster stays a
        # zombie whose pid, still in these lock files, postgres would take for a live server.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                             capture_output=True, text=True).stdout
        return [int(each) for each in out.split()]

    def cleanup(self) -> None:
        """Removes the folder with the cluster; the server must be stopped."""
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def url(self, dbname: str, *, user: str | None = None, password: str | None = None) -> str:
        """``postgresql://user[:password]@127.0.0.1:port/dbname``, the superuser by default."""
        credentials = quote(user or self.superuser, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def admin_connection(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection over the unix socket."""
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.superuser,
                               dbname=dbname, autocommit=True)

    def create_database(self, name: str, *, template: str = "template1") -> str:
        """Creates database ``name`` as a copy of ``template`` and returns its URL."""
        with self.admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops database ``name`` if it exists, ending the sessions still connected to it."""
        with self.admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def create_role(self, name: str, password: str) -> None:
        """A login role that must give ``password`` over TCP (see ``url(..., user, password)``)."""
        with self.admin_connection() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)))
