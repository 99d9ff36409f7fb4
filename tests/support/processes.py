"""Programs the tests run as separate OS processes: ``python -m tests.support.processes ...``."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from app.services.metrics_service import record_task
from app.storage.jsonl.log_writer import JsonlLog
from tests.support import ROOT


def record(logs_dir: str, prefix: str, count: str) -> None:
    """Record ``count`` tasks (0: forever), printing each task_id once it is acknowledged."""
    total = int(count)
    done = 0
    while total == 0 or done < total:
        task_id = f"{prefix}-{done}-{uuid.uuid4().hex[:8]}"
        record_task(task_id, "impl", "local/tiny", 1.0 + done % 7, "completed",
                    logs_dir=logs_dir)
        print(task_id, flush=True)
        done += 1


def hold_lock(store: str) -> None:
    """Take the store's lock, say so, and keep it until killed."""
    with JsonlLog(store).locked():
        print("locked", flush=True)
        while True:
            time.sleep(60)


def append(store: str, number: str) -> None:
    JsonlLog(store).append([{"n": int(number)}])


def finish_then_die(logs_dir: str, task_id: str, status: str, duration: str) -> None:
    """Report a task final, and die the moment its final state is written, before its
    metric record is: as a process killed between the two writes would."""
    from app import create_app

    app = create_app({"AGENT_LOGS_DIR": logs_dir})
    app.extensions["agent"].metrics.store.record = lambda *args: os._exit(9)
    app.test_client().patch(f"/api/agent/tasks/{task_id}",
                            json={"status": status, "duration_seconds": float(duration)})


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.processes", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, text=True,
    )


COMMANDS = {"record": record, "hold-lock": hold_lock, "append": append,
            "finish-then-die": finish_then_die}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
