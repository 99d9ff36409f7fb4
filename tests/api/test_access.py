"""The bearer token guards every route but the open ones, whatever routes exist."""
from __future__ import annotations

import re

import pytest
from flask import Flask

from app.access.callers import token_matches
from app.access.roles import OPEN_ENDPOINTS
from tests.support import open_app

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def guarded(logs_dir, clock) -> Flask:
    return open_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
                     "AGENT_FSYNC": False, "AGENT_API_TOKEN": TOKEN})


def every_route(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for each method of each URL rule, arguments filled with a
    sample."""
    routes = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", "sample", rule.rule)
        routes += [(rule.endpoint, method, url)
                   for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def test_every_route_but_the_open_ones_needs_the_token(guarded: Flask) -> None:
    client = guarded.test_client()
    routes = every_route(guarded)
    assert len(routes) >= 8
    for endpoint, method, url in routes:
        if endpoint in OPEN_ENDPOINTS:
            assert client.open(url, method=method).status_code == 200, url
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json["detail"]
        authorized = client.open(url, method=method, json={},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert authorized.status_code != 401, (method, url)


def test_unknown_paths_need_the_token_too(guarded: Flask) -> None:
    client = guarded.test_client()
    assert client.get("/api/agent/nothing-here").status_code == 401
    assert client.get("/api/agent/nothing-here",
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_the_token_works_end_to_end(guarded: Flask) -> None:
    client = guarded.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"},
                          headers=auth)
    assert created.status_code == 201
    assert client.get(f"/api/agent/tasks/{created.json['id']}", headers=auth).status_code == 200
    assert client.get("/api/agent/tasks").status_code == 401


def test_without_a_token_configured_everything_is_open(client) -> None:
    assert client.get("/api/agent/tasks").status_code == 200
    assert client.get("/api/health").json["status"] == "ok"


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches("ünïcode", TOKEN)


def test_a_route_added_later_is_guarded(guarded: Flask) -> None:
    guarded.add_url_rule("/added-later", "added_later", lambda: "<html></html>")
    client = guarded.test_client()
    assert client.get("/added-later").status_code == 401
    answer = client.get("/added-later", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.text == "<html></html>"
