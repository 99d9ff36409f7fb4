"""scripts/smoke.sh against a service that wants a token: every request carries it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.servers import runner_env
from tests.support import ROOT, GunicornServer

TOKEN = "smoke-test-token-0123456789"


def test_smoke_sends_the_token_and_needs_no_logs_folder(logs_dir: Path):
    server = GunicornServer(logs_dir, env={
        "AGENT_ROUTING_FILE": str(ROOT / "scripts" / "routing.example.json"),
        "AGENT_API_TOKEN": TOKEN}).start()
    try:
        env = runner_env(server.base_url, logs_dir, PYTHON=sys.executable, AGENT_API_TOKEN=TOKEN)
        assert "AGENT_LOGS_DIR" not in env
        result = subprocess.run(["bash", str(ROOT / "scripts" / "smoke.sh")], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=300)
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "smoke: all checks passed"
    assert (logs_dir.parent / "runner" / "agent_runner.log").exists()
