"""metrics_service.service_for: one service per store, however many threads ask at once."""
from __future__ import annotations

import threading
from pathlib import Path

from app.services import metrics_service

BOTH_INSIDE_SECONDS = 2


def test_threads_asking_at_once_share_one_service(logs_dir: Path, monkeypatch) -> None:
    # Each construction waits for a second one to start: without a guard around the
    # registry both threads build a service; with it the second waits for the first,
    # whose wait then runs out.
    both_inside = threading.Barrier(2, timeout=BOTH_INSIDE_SECONDS)
    built: list[metrics_service.MetricsService] = []

    class SlowToBuild(metrics_service.MetricsService):
        def __init__(self, *args, **kwargs) -> None:
            try:
                both_inside.wait()
            except threading.BrokenBarrierError:
                pass
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(metrics_service, "MetricsService", SlowToBuild)
    monkeypatch.setattr(metrics_service, "_services", {})
    got: list[metrics_service.MetricsService] = []
    threads = [threading.Thread(target=lambda: got.append(metrics_service.service_for(logs_dir)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert got == [built[0], built[0]]
