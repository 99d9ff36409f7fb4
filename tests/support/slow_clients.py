"""Slow clients for the serving tests: connections that trickle a request or read an
answer a little at a time, a probe timing ``GET /api/health`` while they are held, and
exports read at a set pace. Everything connects to 127.0.0.1 only."""
from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

TICK_SECONDS = 0.5
"""How often a slow client moves, and how often the probe asks."""
PROBE_LIMIT_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 3.0
SMALL_RECEIVE_BUFFER = 4096
"""A slow reader's socket buffer: the server's writes block after a few KiB, not MiBs."""
READ_PER_TICK = 1024
EXPORT_SLACK_SECONDS = 60
"""How much longer than asked an export read may take before it is given up."""
EXPORT_PATH = "/api/agent/metrics/records?format=jsonl"
TASK_TYPES = ("spec", "test", "impl", "review", "heal")


def write_bulk_store(path: Path, count: int) -> None:
    """Append ``count`` valid records, one task each (``bulk-0`` ...), to a metrics store.

    Written as text in one pass: a few hundred thousand records take well under a second.
    """
    with open(path, "a") as handle:
        handle.writelines(
            f'{{"task_id": "bulk-{n}", "task_type": "{TASK_TYPES[n % len(TASK_TYPES)]}", '
            f'"model": "cursor/auto", "duration_seconds": {n % 997}.5, '
            f'"status": "{"failed" if n % 7 == 0 else "completed"}", '
            f'"created_at": "2026-11-20T10:{n // 60 % 60:02d}:{n % 60:02d}.'
            f'{n % 1_000_000:06d}+00:00"}}\n'
            for n in range(count))


def _header_lines(host: str, headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in {"Host": host, **headers}.items())


class SlowClient:
    """One connection to 127.0.0.1 that moves a little on each :meth:`tick`.

    ``burst`` is sent at once, then ``trickle`` one byte per tick; each tick also reads
    up to ``READ_PER_TICK`` bytes of the answer, without waiting for them. The socket is
    non-blocking after the burst, so a tick never waits on the server.
    """

    def __init__(self, port: int, burst: bytes, trickle: bytes = b"", *,
                 receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(PROBE_TIMEOUT_SECONDS)
            self.sock.connect(("127.0.0.1", port))
            self.sock.sendall(burst)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.unsent = trickle
        self.answer_start = b""
        self.received = 0
        self.closed_by_server = False

    def tick(self) -> None:
        if self.closed_by_server:
            return
        try:
            if self.unsent:
                self.unsent = self.unsent[self.sock.send(self.unsent[:1]):]
            data = self.sock.recv(READ_PER_TICK)
        except BlockingIOError:
            return
        except OSError:  # reset by the server
            self.closed_by_server = True
            return
        if not data:
            self.closed_by_server = True
        self.received += len(data)
        self.answer_start = (self.answer_start + data)[:64]

    def close(self) -> None:
        self.sock.close()


def trickled_header(port: int, host: str, headers: dict[str, str]) -> SlowClient:
    """A GET whose header arrives a byte per tick; it is far too long to end in a test."""
    request = (f"GET /api/health HTTP/1.1\r\n{_header_lines(host, headers)}"
               f"X-Pad: {'p' * 600}\r\n\r\n")
    return SlowClient(port, b"", request.encode())


def trickled_body(port: int, host: str, headers: dict[str, str]) -> SlowClient:
    """A POST whose header arrives at once and whose 4 KiB JSON body a byte per tick."""
    body = b'{"direction": "' + b"x" * 4000 + b'", "task_type": "spec"}'
    head = (f"POST /api/agent/tasks HTTP/1.1\r\n{_header_lines(host, headers)}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return SlowClient(port, head.encode(), body)


def slow_export_reader(port: int, host: str, headers: dict[str, str]) -> SlowClient:
    """A GET of the whole export, read a KiB per tick through a small socket buffer."""
    request = f"GET {EXPORT_PATH} HTTP/1.1\r\n{_header_lines(host, headers)}\r\n"
    return SlowClient(port, request.encode(), receive_buffer=SMALL_RECEIVE_BUFFER)


SlowKind = Callable[[int, str, dict[str, str]], SlowClient]
SLOW_KINDS: tuple[SlowKind, ...] = (trickled_header, trickled_body, slow_export_reader)


@contextmanager
def held_open(kinds: Iterable[SlowKind], port: int, host: str,
              headers: dict[str, str]) -> Iterator[list[SlowClient]]:
    """One open client of each kind, in order; every one is closed on the way out."""
    clients: list[SlowClient] = []
    try:
        for kind in kinds:
            clients.append(kind(port, host, headers))
        yield clients
    finally:
        for client in clients:
            client.close()


@dataclass(frozen=True)
class Probe:
    seconds: float
    status: int | None  # None: no answer (the error says why)
    error: str = ""

    @property
    def quick(self) -> bool:
        return self.status == 200 and self.seconds < PROBE_LIMIT_SECONDS


def probe(url: str, headers: dict[str, str]) -> Probe:
    """One ``GET`` on a new connection, timed."""
    start = time.monotonic()
    try:
        response = requests.get(url, headers=headers, timeout=PROBE_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        return Probe(time.monotonic() - start, None, type(exc).__name__)
    return Probe(time.monotonic() - start, response.status_code)


def hold(clients: list[SlowClient], seconds: float, ask: Callable[[], Probe]) -> list[Probe]:
    """Tick every client and probe once, every ``TICK_SECONDS`` for ``seconds``."""
    probes: list[Probe] = []
    deadline = time.monotonic() + seconds
    for _ in range(math.ceil(seconds / TICK_SECONDS)):
        started = time.monotonic()
        if started >= deadline:
            break
        for client in clients:
            client.tick()
        probes.append(ask())
        time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - started)))
    return probes


def tick_until(clients: list[SlowClient], done: Callable[[], bool], seconds: float) -> bool:
    """Tick every client each ``TICK_SECONDS`` until ``done()``, for at most ``seconds``;
    whether ``done()`` came true."""
    deadline = time.monotonic() + seconds
    for _ in range(math.ceil(seconds / TICK_SECONDS) + 1):
        for client in clients:
            client.tick()
        if done():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(TICK_SECONDS)
    return False


def describe(probes: list[Probe]) -> str:
    return ", ".join(f"{p.seconds:.3f}s:{p.status or p.error}" for p in probes)


def assert_quick(probes: list[Probe], seconds: float) -> None:
    """Every probe answered 200 within PROBE_LIMIT_SECONDS, and they kept coming."""
    slow = [p for p in probes if not p.quick]
    assert not slow, (f"{len(slow)} of {len(probes)} health probes were not a 200 within "
                      f"{PROBE_LIMIT_SECONDS} s: {describe(probes)}")
    assert len(probes) >= 0.8 * seconds / TICK_SECONDS, f"too few probes: {describe(probes)}"


@dataclass(frozen=True)
class ExportRead:
    lines: int
    last_line: bytes  # without its newline, if it had one
    ends_with_newline: bool
    seconds: float
    error: str = ""


def read_export(url: str, headers: dict[str, str], *, expected_lines: int,
                seconds: float = 0.0) -> ExportRead:
    """Read a JSON Lines export, spread over about ``seconds`` (paced by the share of
    ``expected_lines`` read so far); a cut connection ends the read and names the error."""
    lines, tail, error = 0, b"", ""
    start = time.monotonic()
    try:
        with requests.get(url, headers=headers, stream=True, timeout=30) as response:
            response.raise_for_status()
            for chunk in response.iter_content(64 * 1024):
                if time.monotonic() - start > seconds + EXPORT_SLACK_SECONDS:
                    error = f"given up after {seconds + EXPORT_SLACK_SECONDS} s"
                    break
                lines += chunk.count(b"\n")
                tail = (tail + chunk)[-4096:]
                lag = seconds * lines / expected_lines - (time.monotonic() - start)
                time.sleep(min(max(lag, 0.0), seconds))
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    last_line = tail.rstrip(b"\n").rpartition(b"\n")[2]
    return ExportRead(lines, last_line, tail.endswith(b"\n"), time.monotonic() - start, error)
