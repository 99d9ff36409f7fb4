"""The same records give the same answers on both backends: identical records, half of
them with usage, are loaded into a JSONL store and (with ``store copy``) into
PostgreSQL, and every endpoint that reads them is asked the same questions of both."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app.storage.postgres import PostgresDatabase
from app.storage.store_copy import copy_stores
from tests.support.seed import spread_records, write_store
from tests.support import FakeClock, open_app

QUESTIONS = [
    *(f"/api/agent/metrics?window_days={days}" for days in (1, 7, 30, 365)),
    "/api/agent/metrics",
    "/api/agent/metrics/timeseries?window_days=30&bucket=day",
    "/api/agent/metrics/timeseries?window_days=2&bucket=hour",
    "/api/agent/metrics/timeseries?window_days=365",
    "/api/agent/metrics/records",
    "/api/agent/metrics/records?format=csv",
    "/api/agent/metrics/records?status=failed&task_type=impl",
    "/api/agent/metrics/records?format=csv&model=anthropic/claude-sonnet-4-5",
    "/api/agent/metrics/records?since=2026-01-01T00:00:00Z",
    "/api/agent/metrics/compare?by=prompt_variant&a=terse-v1&b=terse-v2",
    "/api/agent/metrics/compare?by=model&a=cursor/auto&b=claude-3-5-haiku-20241022"
    "&window_days=365&task_type=impl",
    "/api/agent/metrics/compare?by=executor&a=runner-a&b=runner-b&window_days=30",
    "/api/agent/metrics/compare?by=skill_version&a=1.0&b=none&window_days=30",
    "/dashboard",
    "/api/agent/pipeline-status",
    "/metrics",
]


@pytest.fixture
def both(tmp_path: Path, database_url: str, clock: FakeClock) -> tuple[FlaskClient, FlaskClient]:
    """A JSONL app and a PostgreSQL app holding the same records."""
    jsonl_dir = tmp_path / "jsonl"
    jsonl_dir.mkdir()
    write_store(jsonl_dir / "metrics.jsonl",
                spread_records(clock(), 3000, days=400, usage_share=0.5))
    database = PostgresDatabase(database_url)
    try:
        copy_stores(jsonl_dir, database)
    finally:
        database.close()
    settings = {"TESTING": True, "CLOCK": clock, "AGENT_FSYNC": False}
    jsonl = open_app({**settings, "AGENT_LOGS_DIR": str(jsonl_dir)})
    postgres = open_app({**settings, "AGENT_LOGS_DIR": str(tmp_path / "unused"),
                         "AGENT_DATABASE_URL": database_url})
    return jsonl.test_client(), postgres.test_client()


def answers(client: FlaskClient) -> dict[str, bytes]:
    """Each question's answer, read whole (an export streams) before the next is asked."""
    replies = {}
    for question in QUESTIONS:
        with client.get(question) as reply:
            assert reply.status_code == 200, question
            replies[question] = reply.get_data()
    return replies


def test_every_endpoint_answers_the_same(both, clock: FakeClock) -> None:
    jsonl, postgres = both
    assert answers(postgres) == answers(jsonl)
    # The questions reach the optional fields: sums and both arms are not empty.
    year = jsonl.get("/api/agent/metrics?window_days=365").json
    assert year["usage"]["tasks_with_usage"] > 0 and year["usage"]["cost_usd"] > 0
    assert len(year["by_prompt_variant"]) == 3 and year["queue_wait"]["count"] > 0
    compared = jsonl.get("/api/agent/metrics/compare?by=prompt_variant&a=terse-v1"
                         "&b=terse-v2").json
    assert compared["a"]["n_with_cost"] > 0 and compared["b"]["n"] > 0
    for client in both:
        client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"})
        claimed = client.post("/api/agent/tasks/claim", json={"runner_id": "r"}).json
        client.patch(f"/api/agent/tasks/{claimed['id']}",
                     json={"status": "failed", "runner_id": "r", "duration_seconds": 12.5})
    clock.advance(days=3)
    assert answers(postgres).keys() == answers(jsonl).keys()
    same_window = "/api/agent/metrics?window_days=30"
    assert postgres.get(same_window).json == jsonl.get(same_window).json


def test_compaction_answers_the_same(both, clock: FakeClock) -> None:
    jsonl, postgres = both
    for client in both:
        result = client.application.test_cli_runner().invoke(
            args=["metrics", "compact", "--keep-days", "30"])
        assert result.exit_code == 0, result.output
        assert "kept" in result.output
    assert answers(postgres) == answers(jsonl)
