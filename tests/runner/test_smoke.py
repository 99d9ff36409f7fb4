"""scripts/smoke.sh against a real gunicorn, so that the smoke test keeps working."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.servers import runner_env
from tests.support import ROOT, GunicornServer

SMOKE = ROOT / "scripts" / "smoke.sh"
EXAMPLE_ROUTING = ROOT / "scripts" / "routing.example.json"


def smoke(base_url: str, logs_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SMOKE)], env=runner_env(base_url, logs_dir, PYTHON=sys.executable),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )


def test_smoke_passes_against_the_example_routing(logs_dir: Path):
    server = GunicornServer(logs_dir, env={"AGENT_ROUTING_FILE": str(EXAMPLE_ROUTING)}).start()
    try:
        first, second = smoke(server.base_url, logs_dir), smoke(server.base_url, logs_dir)
    finally:
        server.stop()
    for result in (first, second):
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[-1] == "smoke: all checks passed"
        assert len([line for line in lines if line.startswith("PASS ")]) == 11
        assert not [line for line in lines if line.startswith("FAIL ")]
    assert "metrics: completed tasks: 2" in second.stdout


def test_smoke_refuses_to_run_a_real_model_cli(server: GunicornServer, logs_dir: Path):
    result = smoke(server.base_url, logs_dir)
    assert result.returncode == 1
    assert "FAIL tasks are routed to 'ollama/glm-4.7-flash:latest'" in result.stdout
    assert "AGENT_ROUTING_FILE=scripts/routing.example.json" in result.stdout
    assert not (logs_dir / "metrics.jsonl").exists()
