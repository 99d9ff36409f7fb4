"""A multi-host simulation: three gunicorn servers, each with a logs folder of its own (so
nothing is shared through disk), keep both stores in one PostgreSQL; four runner
processes, each a client of one server's HTTP API only, run 1,000 tasks of every type,
created through all three servers. While tasks are created and run, one server is killed
with SIGKILL (master and workers, as a host that dies) and started again on its port and
logs folder, and PostgreSQL is restarted.

In the end every creation the API acknowledged is among the tasks, every task has
completed, its command ran exactly once (the fake agent notes each run in one shared
file, and each task has a direction of its own), the database holds exactly one metric
record per task, and every server reports the same counts and aggregates.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from app.models.agent import TASK_TYPES
from bench.postgres_server import PostgresServer
from bench.servers import runner_env
from tests.support.runner import (
    FAKE_COMMAND, outbox, process_alive, restart_api, runs, start_runner, wait_for,
)
from tests.support import GunicornServer, stop_process

pytestmark = pytest.mark.backend("postgresql")

TASKS = 1000
SERVERS = 3
RUNNER_SERVERS = (0, 1, 2, 0)
"""The server each runner talks to."""
RUNNER_OPTIONS = ("--workers", "4", "--interval", "0.5", "--lease-seconds", "60")
KILLED = 0
"""The server killed mid-run: two runners talk to it."""
CREATED_PER_SECOND = 40
"""A little faster than the runners go here: tasks are still being created, and some
wait, at the kill and at the restart."""
KILL_AT, RESTART_DATABASE_AT = 150, 450
"""How many tasks have finished when the server is killed, and when PostgreSQL is
restarted."""
DOWN_SECONDS = 1.0
"""How long the killed server stays down."""
DEADLINE_SECONDS = 120
"""For creating and running every task, from the first creation."""
ROUTING = {task_type: {"model": f"fake/{task_type}", "command": FAKE_COMMAND}
           for task_type in TASK_TYPES}


def direction_of(number: int) -> str:
    return f"multi-host task {number}"


def task_type_of(number: int) -> str:
    return TASK_TYPES[number % len(TASK_TYPES)]


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one query, asked again while the database cannot be reached."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def finished_count(url: str) -> int:
    return query(url, "SELECT count(*) FROM metric_records")[0][0]


class Creator:
    """Creates the tasks through the servers, one thread per server.

    A creation that got no 201 may still have been stored (a server that dies after its
    commit), so before it is sent again, to the next server, the database is asked for
    a task with its direction (each is unique).
    """

    def __init__(self, base_urls: list[str], database_url: str) -> None:
        self.base_urls = base_urls
        self.database_url = database_url
        self.acknowledged: dict[str, str] = {}
        """Task id by direction, of each creation answered 201."""
        self.unanswered: dict[str, tuple[str, str]] = {}
        """Task id and the failure its creation met, by direction, of each task stored
        though its creation got no 201."""
        self.failures: list[str] = []
        self.errors: list[BaseException] = []
        self.started = time.monotonic()
        self.deadline = self.started + DEADLINE_SECONDS
        self.threads = [threading.Thread(target=self._create_share, args=(home,), daemon=True)
                        for home in range(len(base_urls))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(max(0.0, self.deadline - time.monotonic()))
        assert not self.errors, self.errors
        assert not any(thread.is_alive() for thread in self.threads), "creation still going"

    def created(self) -> int:
        return len(self.acknowledged) + len(self.unanswered)

    def task_ids(self) -> dict[str, str]:
        """Task id by direction, of every task created."""
        return {**self.acknowledged,
                **{direction: task_id for direction, (task_id, _) in self.unanswered.items()}}

    def _create_share(self, home: int) -> None:
        try:
            for number in range(home, TASKS, len(self.base_urls)):
                time.sleep(max(0.0, self.started + number / CREATED_PER_SECOND
                               - time.monotonic()))
                self._create(number, home)
        except BaseException as exc:
            self.errors.append(exc)

    def _create(self, number: int, home: int) -> None:
        direction = direction_of(number)
        body = {"direction": direction, "task_type": task_type_of(number)}
        for attempt in itertools.count():
            base_url = self.base_urls[(home + attempt) % len(self.base_urls)]
            try:
                response = requests.post(f"{base_url}/api/agent/tasks", json=body, timeout=30)
            except requests.RequestException as exc:
                failure = type(exc).__name__
            else:
                if response.status_code == 201:
                    self.acknowledged[direction] = response.json()["id"]
                    return
                assert response.status_code in (502, 503, 504), (
                    f"creating {direction!r}: {response.status_code} {response.text}")
                failure = f"{response.status_code} {response.text.strip()}"
            self.failures.append(failure)
            assert time.monotonic() < self.deadline, f"{direction!r} never created"
            time.sleep(0.2)  # a commit sent just before the server died lands meanwhile
            stored = query(self.database_url, "SELECT id FROM tasks "
                                              "WHERE state->>'direction' = %s", direction)
            assert len(stored) <= 1, f"{direction!r} stored twice: {stored}"
            if stored:
                self.unanswered[direction] = (stored[0][0], failure)
                return


class RunnerProcess:
    """``scripts/agent_runner.py`` in its own process, its output read as it comes so that
    it never blocks on a full pipe."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process = start_runner(env, *RUNNER_OPTIONS)
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        _, self.stderr = self.process.communicate()

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); its exit status."""
        stop_process(self.process, grace_seconds=30)
        self._reader.join(30)
        return self.process.returncode


def runner_pid(runner_id: str) -> int:
    """The pid in a runner id: ``<host>-<pid>-<random>-w<worker>``."""
    return int(runner_id.rsplit("-", 3)[1])


def flowing(url: str, runners: list[RunnerProcess], finished: int) -> int | None:
    """How many tasks have finished, once at least ``finished`` have and every runner has
    claimed some; None before."""
    count = finished_count(url)
    if count < finished:
        return None
    claimers = query(url, "SELECT DISTINCT runner_id FROM tasks WHERE runner_id IS NOT NULL")
    pids = {runner_pid(runner_id) for runner_id, in claimers}
    return count if pids >= {runner.process.pid for runner in runners} else None


def runner_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("agent_runner ERROR")]


def kill_server(server: GunicornServer) -> None:
    """SIGKILL the gunicorn master, so that it starts no new worker, then its workers."""
    assert server.process is not None
    workers = server.worker_pids()
    server.process.send_signal(signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(timeout=10)
    wait_for(lambda: not any(process_alive(pid) for pid in workers), "the workers to die",
             timeout=10)


def api_json(base_url: str, path: str) -> dict[str, Any]:
    response = requests.get(f"{base_url}/api/agent{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def servers(backend: str) -> Iterator[list[GunicornServer]]:
    """The servers the test starts, stopped at its end (before the database is dropped)."""
    started: list[GunicornServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def runners(backend: str) -> Iterator[list[RunnerProcess]]:
    """The runners the test starts, stopped at its end."""
    started: list[RunnerProcess] = []
    yield started
    for runner in started:
        runner.stop()


def test_three_servers_and_four_runners_on_one_database_survive_a_dead_server_and_a_restart(
    backend: str, database_url: str, postgres_server: PostgresServer, tmp_path: Path,
    servers: list[GunicornServer], runners: list[RunnerProcess],
) -> None:
    began = time.monotonic()
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps(ROUTING))
    for number in range(SERVERS):
        logs_dir = tmp_path / f"server-{number}"
        logs_dir.mkdir()
        servers.append(GunicornServer(logs_dir, workers=2,
                                      env={"AGENT_ROUTING_FILE": str(routing)}).start())
    workdir = tmp_path / "work"
    workdir.mkdir()
    runs_env = {"FAKE_AGENT_RUNS": str(tmp_path / "runs.jsonl")}
    for number, server in enumerate(RUNNER_SERVERS):
        env = runner_env(servers[server].base_url, servers[server].log_path.parent, **runs_env,
                         AGENT_WORKDIR=str(workdir),
                         AGENT_RUNNER_DIR=str(tmp_path / f"runner-{number}"))
        del env["AGENT_DATABASE_URL"]  # a runner knows the API only
        runners.append(RunnerProcess(env))

    started = time.monotonic()
    timings = {"start of the servers and runners": started - began}
    creator = Creator([server.base_url for server in servers], database_url)
    creator.start()

    finished = {"kill": wait_for(lambda: flowing(database_url, runners, KILL_AT),
                                 f"{KILL_AT} finished tasks", timeout=DEADLINE_SECONDS)}
    creations = {"kill": creator.created()}
    killed_at = time.monotonic()
    kill_server(servers[KILLED])
    time.sleep(DOWN_SECONDS)
    servers[KILLED] = restart_api(servers[KILLED])
    timings["server down"] = time.monotonic() - killed_at

    finished["restart"] = wait_for(lambda: flowing(database_url, runners, RESTART_DATABASE_AT),
                                   f"{RESTART_DATABASE_AT} finished tasks",
                                   timeout=DEADLINE_SECONDS)
    creations["restart"] = creator.created()
    restarted_at = time.monotonic()
    postgres_server.restart()
    timings["database restart"] = time.monotonic() - restarted_at

    creator.join()
    timings["creation"] = time.monotonic() - started
    wait_for(lambda: finished_count(database_url) >= TASKS, f"{TASKS} finished tasks",
             timeout=max(1.0, DEADLINE_SECONDS - (time.monotonic() - started)))
    timings["run"] = run_seconds = time.monotonic() - started
    for runner in runners:
        wait_for(lambda: outbox(runner.env) == [], "the outboxes to empty", timeout=60)
    statuses = [runner.stop() for runner in runners]
    kept = [runner.stderr.count("not delivered yet") for runner in runners]
    report = (", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
              + f"; {TASKS / run_seconds:.1f} tasks/s; tasks created/finished at the kill "
              f"{creations['kill']}/{finished['kill']}, at the restart "
              f"{creations['restart']}/{finished['restart']}; creations sent again: "
              f"{dict(Counter(creator.failures))}; stored though not answered 201: "
              f"{[failure for _, failure in creator.unanswered.values()]}; "
              f"reports kept in an outbox by each runner: {kept}")
    print(f"\nmulti-host run: {report}")
    assert statuses == [128 + signal.SIGTERM] * len(runners), [r.stderr for r in runners]
    for runner in runners:
        assert runner_errors(runner.stderr) == [], runner.stderr

    created = creator.task_ids()
    assert sorted(created) == sorted(direction_of(number) for number in range(TASKS))
    tasks = {task_id: (direction, status, attempts, runner_id)
             for task_id, direction, status, attempts, runner_id in query(
                 database_url, "SELECT id, state->>'direction', status, "
                               "(state->>'attempts')::int, runner_id FROM tasks")}
    assert len(tasks) == TASKS, report
    lost = {direction: task_id for direction, task_id in creator.acknowledged.items()
            if tasks.get(task_id, (None,))[0] != direction}
    assert lost == {}, f"acknowledged, then lost: {lost}"
    assert {task_id: task[0] for task_id, task in tasks.items()} == {
        task_id: direction for direction, task_id in created.items()}, report
    assert Counter(task[1] for task in tasks.values()) == {"completed": TASKS}, report
    assert Counter(task[2] for task in tasks.values()) == {1: TASKS}, report
    assert {runner_pid(task[3]) for task in tasks.values()} == {
        runner.process.pid for runner in runners}, "a runner ran no task"

    ran = Counter(run["options"]["direction"] for run in runs(runs_env))
    assert {direction for direction, count in ran.items() if count != 1} == set(), report
    assert ran.keys() == created.keys(), report

    records = query(database_url, "SELECT task_id, count(*), min(status) FROM metric_records "
                                  "GROUP BY task_id")
    assert len(records) == TASKS, report
    assert {task_id for task_id, _, _ in records} == set(tasks), report
    assert {(count, status) for _, count, status in records} == {(1, "completed")}, report

    counts = [api_json(server.base_url, "/tasks/count") for server in servers]
    aggregates = [api_json(server.base_url, "/metrics") for server in servers]
    assert counts[0]["total"] == TASKS and counts[0]["by_status"]["completed"] == TASKS, counts
    assert all(each == counts[0] for each in counts), counts
    assert aggregates[0]["success_rate"]["total"] == TASKS, aggregates[0]
    assert aggregates[0]["success_rate"]["completed"] == TASKS, aggregates[0]
    assert all(each == aggregates[0] for each in aggregates), aggregates
