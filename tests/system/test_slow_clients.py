"""gunicorn as gunicorn.conf.py runs it keeps serving while slow clients hold connections
(trickled headers, trickled bodies, exports read a KiB at a time), and a long export is
not cut by the worker timeout: threaded workers give a slow client one thread, not the
whole worker, and their timeout watches the worker's loop, not a request."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.slow_clients import (
    EXPORT_PATH, SLOW_KINDS, assert_quick, held_open, hold, probe, read_export,
    slow_export_reader, write_bulk_store,
)
from tests.support.stores import seed_store_file
from tests.support import GunicornServer

RECORDS = 300_000
"""About 48 MB of export: far more than the socket buffers between server and client."""
SLOW_PER_WORKER = 3
HOLD_SECONDS = 30
WORKER_TIMEOUT_SECONDS = 5
SLOW_READ_SECONDS = 12


@pytest.fixture(scope="module")
def bulk_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "metrics.jsonl"
    write_bulk_store(path, RECORDS)
    return path


def serve(logs_dir: Path, bulk_store: Path, env: dict[str, str] | None = None) -> GunicornServer:
    seed_store_file(logs_dir, bulk_store)
    return GunicornServer(logs_dir, env=env).start()


def test_health_answers_while_slow_clients_hold_connections(logs_dir, bulk_store) -> None:
    server = serve(logs_dir, bulk_store)
    kinds = [SLOW_KINDS[n % len(SLOW_KINDS)] for n in range(SLOW_PER_WORKER * server.workers)]
    try:
        with held_open(kinds, server.port, "127.0.0.1", {}) as clients:
            probes = hold(clients, HOLD_SECONDS, lambda: probe(f"{server.base_url}/api/health", {}))
            closed = [kind.__name__ for kind, client in zip(kinds, clients)
                      if client.closed_by_server]
            readers = [client for kind, client in zip(kinds, clients)
                       if kind is slow_export_reader]
    finally:
        server.stop()
    assert_quick(probes, HOLD_SECONDS)
    assert not closed, f"the server let go of slow clients early: {closed}"
    assert all(reader.answer_start.startswith(b"HTTP/1.1 200 ") for reader in readers)


def test_an_export_read_for_longer_than_the_worker_timeout_is_complete(
        logs_dir, bulk_store) -> None:
    server = serve(logs_dir, bulk_store,
                   env={"GUNICORN_CMD_ARGS": f"--timeout {WORKER_TIMEOUT_SECONDS}"})
    try:
        read = read_export(server.base_url + EXPORT_PATH, {}, expected_lines=RECORDS,
                           seconds=SLOW_READ_SECONDS)
    finally:
        server.stop()
    assert (read.lines, read.error) == (RECORDS, ""), read.error
    assert read.ends_with_newline
    assert json.loads(read.last_line)["task_id"] == f"bulk-{RECORDS - 1}"
    assert read.seconds > 2 * WORKER_TIMEOUT_SECONDS
