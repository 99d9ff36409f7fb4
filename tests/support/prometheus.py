"""A real Prometheus server for the tests: Debian's ``prometheus`` on a free port, with the
shipped scrape configuration and alert rules (``deploy/prometheus``) pointed at a test's
gunicorn, scraping and evaluating every second."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.servers import free_port, stop_process
from tests.support import ROOT

SHIPPED = ROOT / "deploy" / "prometheus"
INTERVAL = "1s"


class PrometheusServer:
    def __init__(self, folder: Path, target: str) -> None:
        """``target``: the ``host:port`` of the service to scrape."""
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
        [job] = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED / "alerts.yml", folder / "alerts.yml")
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> PrometheusServer:
        with open(self.folder / "prometheus.out", "wb") as out:
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={self.folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                cwd=self.folder, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "prometheus.out").read_text())
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus was not ready in {timeout:g} s")

    def stop(self) -> None:
        stop_process(self.process, grace_seconds=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now; AssertionError if Prometheus refuses it."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr},
                              timeout=30).json()
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] == "vector", (expr, answer)
        return answer["data"]["result"]

    def firing(self) -> list[dict[str, Any]]:
        """The labels of the alerts firing now."""
        answer = requests.get(f"{self.url}/api/v1/alerts", timeout=30).json()
        return [alert["labels"] for alert in answer["data"]["alerts"]
                if alert["state"] == "firing"]
