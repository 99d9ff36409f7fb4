"""GET /dashboard/compare: the page tells which arm is better at what, by how much and how
surely, in the API's numbers (written out here, not by the page's own helpers); it warns
about small arms, and renders in a real browser."""
from __future__ import annotations

import html as html_text
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from PIL import Image

from tests.api.test_metrics_compare import finish_task
from tests.support import GunicornServer
from tests.system.test_dashboard import SCREEN, chromium, run_chromium

PAGE = "/dashboard/compare"
ARMS_QUERY = "by=prompt_variant&a=long-v1&b=terse-v2"

# (prompt_variant, completed, duration, cost): long-v1 succeeds 12 of 20 times, slowly;
# terse-v2 19 of 20, quickly, at about the same cost.
TASKS = ([("long-v1", index < 12, 60.0 + index, 0.30 + index % 5 / 100) for index in range(20)]
         + [("terse-v2", index < 19, 30.0 + index, 0.31 + index % 4 / 100)
            for index in range(20)])


def seed(finish: Callable[..., None], tasks: list[tuple[str, bool, float, float]]) -> None:
    for variant, completed, duration, cost in tasks:
        finish(completed=completed, duration=duration, cost=cost, prompt_variant=variant)


def finding(page: str, aspect: str) -> dict[str, str]:
    """The verdict, headline and confidence of one finding, as text."""
    panel = re.search(rf'id="finding-{aspect}">(.*?)</div>', page, re.S).group(1)
    parts = {name: re.search(rf'class="{name}[^"]*">([^<]*)<', panel).group(1)
             for name in ("verdict", "headline", "confidence")}
    return {name: html_text.unescape(text) for name, text in parts.items()}


def p_in_words(p_value: float) -> str:
    shown = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"
    return f"significant at 5% ({shown})" if p_value < 0.05 else f"could be noise ({shown})"


def expected_findings(answer: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The words the page should say for this answer (arms of the seed above: b succeeds
    more often, faster, and costs more)."""
    a, b, difference = answer["a"], answer["b"], answer["difference"]
    return {
        "success": {
            "verdict": answer["verdict"]["success"],
            "headline": f"b succeeds {round(difference['success_rate']['delta'] * 100)} points "
                        f"more often: {b['success_rate']:.0%} vs {a['success_rate']:.0%}",
            "confidence": p_in_words(difference["success_rate"]["p_value"]),
        },
        "duration": {
            "verdict": answer["verdict"]["duration"],
            "headline": f"b takes {-difference['p50_seconds']['delta']:g} s less at the median: "
                        f"{b['p50_seconds']:g} s vs {a['p50_seconds']:g} s",
            "confidence": p_in_words(difference["p50_seconds"]["p_value"]),
        },
        "cost": {
            "verdict": answer["verdict"]["cost"],
            "headline": f"b costs ${difference['avg_cost_usd']['delta']:.3g} more per task on "
                        f"average: ${b['avg_cost_usd']:.3g} vs ${a['avg_cost_usd']:.3g}",
            "confidence": p_in_words(difference["avg_cost_usd"]["p_value"]),
        },
    }


def test_the_page_says_who_is_better_by_how_much_and_how_surely(client: FlaskClient) -> None:
    seed(lambda **report: finish_task(client, **report), TASKS)
    answer = client.get(f"/api/agent/metrics/compare?{ARMS_QUERY}").json
    response = client.get(f"{PAGE}?{ARMS_QUERY}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.data.decode()
    expected = expected_findings(answer)
    for aspect in ("success", "duration", "cost"):
        assert finding(page, aspect) == expected[aspect]
    assert finding(page, "success")["headline"] == "b succeeds 35 points more often: 95% vs 60%"
    assert (finding(page, "success")["verdict"], finding(page, "duration")["verdict"]) == (
        "b better", "b better")
    assert 'id="warnings"' not in page
    arms = re.search(r'<table id="arms">(.*?)</table>', page, re.S).group(1)
    low, high = answer["b"]["success_rate_ci95"]
    assert f"95% ({low:.0%}–{high:.0%})" in arms


def test_small_and_empty_arms_are_warned_about(client: FlaskClient) -> None:
    seed(lambda **report: finish_task(client, **report), TASKS[:3])
    page = client.get(f"{PAGE}?{ARMS_QUERY}&window_days=30").data.decode()
    warnings = re.search(r'<ul class="warnings" id="warnings">(.*?)</ul>', page, re.S).group(1)
    assert "a (long-v1) has only 3 tasks" in warnings
    assert "b (terse-v2) has no tasks in this window" in warnings
    assert finding(page, "success") == {
        "verdict": "not enough data",
        "headline": "nothing to compare: a has 3 tasks, b has 0",
        "confidence": "not enough data: each arm needs at least 2 tasks (a has 3, b has 0)"}
    assert finding(page, "cost")["confidence"] == (
        "not enough data: each arm needs at least 2 tasks with a known cost (a has 3, b has 0)")
    assert "last 30 days" in page and '<option value="30" selected>' in page
    arms = re.search(r'<table id="arms">(.*?)</table>', page, re.S).group(1)
    p50_row = re.search(r"<td>p50 duration</td>(.*?)</tr>", arms, re.S).group(1)
    assert re.findall(r"<td>([^<]*)</td>", p50_row) == ["61 s", "—", "—"]


def test_without_both_arms_the_page_is_the_form(client: FlaskClient) -> None:
    for query in ("", "?by=executor", "?by=executor&a=host-1", "?by=executor&a=&b="):
        response = client.get(f"{PAGE}{query}")
        assert response.status_code == 200
        page = response.data.decode()
        assert 'id="choose"' in page and 'id="finding-' not in page
        assert '<select name="by">' in page and '<input name="a"' in page
    assert '<option value="executor" selected>' in page


def test_the_form_keeps_what_was_chosen(client: FlaskClient) -> None:
    page = client.get(f"{PAGE}?by=skill_version&a=2026.1&b=2026.2&task_type=impl"
                      "&window_days=14").data.decode()
    assert '<option value="skill_version" selected>' in page
    assert 'name="a" value="2026.1"' in page and 'name="b" value="2026.2"' in page
    assert 'name="task_type" value="impl"' in page and '<option value="14" selected>' in page
    assert "impl tasks, last 14 days" in re.sub(r"\s+", " ", page)


def test_the_dashboard_links_to_it(client: FlaskClient) -> None:
    assert f'href="{PAGE}"' in client.get("/dashboard").data.decode()
    assert 'href="/dashboard"' in client.get(PAGE).data.decode()


@pytest.mark.parametrize("query", ["by=colour&a=x&b=y", "by=model&a=x&b=y&window_days=0",
                                   "by=model&a=x&b=y&bucket=day"])
def test_a_bad_query_is_422(client: FlaskClient, query: str) -> None:
    assert client.get(f"{PAGE}?{query}").status_code == 422


def finish_over_http(base: str) -> Callable[..., None]:
    def finish(completed: bool, duration: float, cost: float, prompt_variant: str) -> None:
        task = requests.post(f"{base}/api/agent/tasks", timeout=30, json={
            "direction": "d", "task_type": "impl",
            "context": {"prompt_variant": prompt_variant}}).json()
        claimed = requests.post(f"{base}/api/agent/tasks/claim", timeout=30,
                                json={"runner_id": "host/r1"}).json()
        assert claimed["id"] == task["id"]
        requests.patch(f"{base}/api/agent/tasks/{task['id']}", timeout=30, json={
            "runner_id": "host/r1", "status": "completed" if completed else "failed",
            "duration_seconds": duration, "usage": {"input_tokens": 10, "cost_usd": cost},
            "executor": "host-1"}).raise_for_status()
    return finish


def test_the_page_in_headless_chromium(logs_dir, tmp_path) -> None:
    binary = chromium()
    server = GunicornServer(logs_dir).start()
    try:
        seed(finish_over_http(server.base_url), TASKS)
        url = f"{server.base_url}{PAGE}?{ARMS_QUERY}&task_type=impl"
        answer = requests.get(f"{server.base_url}/api/agent/metrics/compare?{ARMS_QUERY}"
                              "&task_type=impl", timeout=30).json()
        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
        screenshot = tmp_path / "compare.png"
        run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    finally:
        server.stop()
    expected = expected_findings(answer)
    for aspect in ("success", "duration", "cost"):
        assert finding(dom, aspect) == expected[aspect]
    assert finding(dom, "success")["verdict"] == "b better"
    assert finding(dom, "success")["confidence"].startswith("significant at 5%")

    image = Image.open(screenshot).convert("RGB")
    assert image.size == SCREEN
    colors = {color for _, color in image.getcolors(maxcolors=1 << 20)}
    assert len(colors) > 50, "the screenshot looks blank"
    assert (0xE3, 0xF4, 0xE4) in colors, "no 'b better' badge on screen"
