"""Control of the queue end to end, on both backends: real gunicorn, real runner processes
and real commands (small ``sh`` programs in the routing file in place of the model CLIs):
retries with backoff, cancellation of a running command, priorities and delays, caps per
model, rerun."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.servers import GunicornServer, runner_env, stop_process
from tests.support.runner import get_task, metric_records, process_alive, start_runner, wait_for

COUNT_RUNS = 'n=$(cat "$1.count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1.count"; '
"""Counts the runs of one direction in a file named by it (the direction is a path)."""


def sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, *args]


def note_run(model: str) -> list[str]:
    """Notes when a run of ``model`` starts and ends in the file the direction's first
    word names, sleeping as many seconds as its second word says in between."""
    return sh(f'set -- $1; echo "$(date +%s.%N) start {model}" >> "$1"; sleep "$2"; '
              f'echo "$(date +%s.%N) end {model}" >> "$1"', "--", "{direction}")


ROUTING: dict[str, Any] = {
    # Fails with EX_TEMPFAIL twice, then succeeds.
    "impl": {"model": "local/flaky", "tier": "local", "max_attempts": 3,
             "backoff_seconds": 0.2, "backoff_max_seconds": 1,
             "command": sh(COUNT_RUNS + 'if [ $n -lt 3 ]; then echo "busy, try later"; '
                           'exit 75; fi; echo done', "--", "{direction}")},
    # The first run asks to be retried in 2 s; later runs succeed.
    "heal": {"model": "local/patient", "tier": "local", "max_attempts": 3,
             "command": sh(COUNT_RUNS + 'date +%s.%N >> "$1.times"; if [ $n -lt 2 ]; then '
                           'echo "::retry-after:: 2"; exit 1; fi; echo healed',
                           "--", "{direction}")},
    # Fails for good: no retry asked.
    "review": {"model": "local/strict", "tier": "local", "max_attempts": 3,
               "command": sh(COUNT_RUNS + 'echo "bad input"; exit 1', "--", "{direction}")},
    # Runs until stopped; notes its pid in the file the direction names.
    "test": {"model": "local/slow", "tier": "local",
             "command": sh('echo $$ > "$1"; exec sleep 300', "--", "{direction}")},
    # Notes its runs, in the order they start: the direction is a name and a file.
    "spec": {"model": "local/note", "tier": "local",
             "command": sh('set -- $1; echo "$1" >> "$2"', "--", "{direction}")},
}


@dataclass
class Service:
    server: GunicornServer
    logs_dir: Path
    folder: Path

    @property
    def api(self) -> str:
        return f"{self.server.base_url}/api/agent"

    def create(self, direction: str, task_type: str, **fields: Any) -> dict[str, Any]:
        response = requests.post(f"{self.api}/tasks", json={
            "direction": direction, "task_type": task_type, **fields}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def runner(self, name: str, *args: str, **env: str) -> subprocess.Popen[str]:
        environment = runner_env(self.server.base_url, self.logs_dir,
                                 AGENT_RUNNER_DIR=str(self.folder / name), **env)
        return start_runner(environment, "--interval", "0.2", *args)


def serve(folder: Path, logs_dir: Path, routing: dict[str, Any]) -> GunicornServer:
    path = folder / "routing.json"
    path.write_text(json.dumps(routing))
    return GunicornServer(logs_dir, env={"AGENT_ROUTING_FILE": str(path),
                                         "AGENT_FSYNC": "0"}).start()


@pytest.fixture
def service(tmp_path: Path, logs_dir: Path) -> Iterator[Service]:
    server = serve(tmp_path, logs_dir, ROUTING)
    yield Service(server, logs_dir, tmp_path)
    server.stop()


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for runner in started:
        stop_process(runner, grace_seconds=20)


def ended(service: Service, task_id: str) -> dict[str, Any] | None:
    task = get_task(service.server.base_url, task_id)
    return task if task["status"] in ("completed", "failed", "cancelled") else None


def records_of(service: Service, task_id: str) -> list[dict[str, Any]]:
    return [record for record in metric_records(service.logs_dir)
            if record["task_id"] == task_id]


def test_a_command_that_asks_twice_to_be_retried_completes_on_its_third_attempt(
        service: Service, runners: list, tmp_path: Path) -> None:
    flaky = service.create(str(tmp_path / "flaky"), "impl")
    strict = service.create(str(tmp_path / "strict"), "review")
    runners.append(service.runner("r1"))
    done = wait_for(lambda: ended(service, flaky["id"]), "the flaky task to end", 60)
    assert (done["status"], done["attempts"]) == ("completed", 3)
    failed = wait_for(lambda: ended(service, strict["id"]), "the strict task to end", 60)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert "bad input" in failed["last_error"]
    assert (tmp_path / "strict.count").read_text().strip() == "1"
    assert [record["status"] for record in records_of(service, flaky["id"])] == ["completed"]
    assert [record["status"] for record in records_of(service, strict["id"])] == ["failed"]


def test_retry_after_delays_the_next_claim(service: Service, runners: list,
                                           tmp_path: Path) -> None:
    task = service.create(str(tmp_path / "patient"), "heal")
    runners.append(service.runner("r1"))
    done = wait_for(lambda: ended(service, task["id"]), "the task to end", 60)
    assert (done["status"], done["attempts"]) == ("completed", 2)
    first, second = map(float, (tmp_path / "patient.times").read_text().split())
    assert second - first >= 2.0
    assert len(records_of(service, task["id"])) == 1


def test_a_running_command_is_stopped_soon_after_a_cancel(service: Service, runners: list,
                                                          tmp_path: Path) -> None:
    pid_file = tmp_path / "slow.pid"
    task = service.create(str(pid_file), "test")
    waiting = service.create(str(tmp_path / "never"), "test", run_after=(
        datetime.now(timezone.utc) + timedelta(hours=1)).isoformat())
    runners.append(service.runner("r1", "--lease-seconds", "600"))
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                       "the command to start", 60))
    assert process_alive(pid)
    asked = time.monotonic()
    response = requests.post(f"{service.api}/tasks/{task['id']}/cancel",
                             json={"reason": "runaway"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["cancel_requested"] is True
    cancelled = requests.post(f"{service.api}/tasks/{waiting['id']}/cancel", timeout=30)
    assert cancelled.json()["status"] == "cancelled"
    wait_for(lambda: not process_alive(pid), "the command to stop", 30)
    assert time.monotonic() - asked <= 15
    done = wait_for(lambda: ended(service, task["id"]), "the task to end", 30)
    assert done["status"] == "cancelled"
    assert records_of(service, task["id"]) == []
    time.sleep(1)
    assert get_task(service.server.base_url, waiting["id"])["status"] == "cancelled"
    assert not (tmp_path / "never").exists()


def test_claims_follow_priority_then_age_and_wait_for_run_after(
        service: Service, tmp_path: Path) -> None:
    notes = tmp_path / "order.txt"
    soon = (datetime.now(timezone.utc) + timedelta(seconds=3)).isoformat()
    for name, fields in [("old-low", {"priority": -5}), ("plain-1", {}),
                         ("later-urgent", {"priority": 100, "run_after": soon}),
                         ("urgent", {"priority": 50}), ("plain-2", {})]:
        service.create(f"{name} {notes}", "spec", **fields)
    first = service.runner("once-1", "--once")
    assert first.wait(60) == 0, first.stderr.read() if first.stderr else ""
    assert notes.read_text().split() == ["urgent", "plain-1", "plain-2", "old-low"]
    time.sleep(3)
    second = service.runner("once-2", "--once")
    assert second.wait(60) == 0
    assert notes.read_text().split()[-1] == "later-urgent"


def test_a_cap_on_a_model_holds_across_runners_while_other_models_run(
        tmp_path: Path, logs_dir: Path, runners: list) -> None:
    notes = tmp_path / "runs.txt"
    routing = {
        "spec": {"model": "cloud/capped", "tier": "cloud", "command": note_run("cloud/capped")},
        "test": {"model": "local/free", "tier": "local", "command": note_run("local/free")},
        "limits": {"models": {"cloud/capped": 2}},
    }
    server = serve(tmp_path, logs_dir, routing)
    service = Service(server, logs_dir, tmp_path)
    try:
        capped = [service.create(f"{notes} 1", "spec")["id"] for _ in range(10)]
        free = [service.create(f"{notes} 0.5", "test")["id"] for _ in range(10)]
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                running = requests.get(f"{service.api}/tasks", params={
                    "status": "running", "limit": 500}, timeout=30).json()["tasks"]
                samples.append(sum(task["model"] == "cloud/capped" for task in running))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        runners.extend(service.runner(f"r{n}") for n in range(6))
        for task_id in capped + free:
            wait_for(lambda task_id=task_id: ended(service, task_id), "every task", 120)
        stop.set()
        sampler.join()
    finally:
        server.stop()
    assert max(samples) == 2 and len(samples) > 20
    events = sorted((float(at), what, model) for at, what, model in
                    (line.split() for line in notes.read_text().splitlines()))
    running = {"cloud/capped": 0, "local/free": 0}
    most = dict(running)
    for _, what, model in events:
        running[model] += 1 if what == "start" else -1
        most[model] = max(most[model], running[model])
    assert most["cloud/capped"] == 2
    assert most["local/free"] >= 3  # the other model's tasks kept running meanwhile


def test_rerun_makes_a_new_task_linked_to_the_ended_one(service: Service, runners: list,
                                                        tmp_path: Path) -> None:
    task = service.create(str(tmp_path / "strict"), "review", priority=7,
                          context={"repo": "x"})
    runners.append(service.runner("r1"))
    wait_for(lambda: ended(service, task["id"]), "the task to end", 60)
    response = requests.post(f"{service.api}/tasks/{task['id']}/rerun", timeout=30)
    assert response.status_code == 201, response.text
    again = response.json()
    assert again["id"] != task["id"] and again["rerun_of"] == task["id"]
    assert {name: again[name] for name in ("direction", "task_type", "context", "priority")} \
        == {name: task[name] for name in ("direction", "task_type", "context", "priority")}
    done = wait_for(lambda: ended(service, again["id"]), "the rerun to end", 60)
    assert done["status"] == "failed"
    assert (tmp_path / "strict.count").read_text().strip() == "2"
