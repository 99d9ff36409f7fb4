"""The runner's client of the task API: list pending tasks, claim one, report it."""
from __future__ import annotations

import re
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

PENDING_PAGE = 500
"""The most tasks one listing returns (the API's largest ``limit``)."""

TIMEOUT = (3.05, 30.0)
"""Seconds to connect, and to wait for an answer once connected."""


def retry_policy() -> Retry:
    """Bounded retries with backoff (0, 1, 2 and 4 s: about 7 s in all).

    Only failures after which the request cannot have taken effect are retried:
    connection errors (nothing was sent) and 502/503/504. A read error is not: the
    request may have been applied, and repeating a claim would then look like another
    runner's claim (409). ``Retry-After`` is ignored so that the wait stays bounded.
    """
    return Retry(
        total=4, connect=4, read=0, other=0, status=4,
        backoff_factor=0.5, backoff_max=4,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "PATCH"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )


class ApiError(Exception):
    """The API could not be reached, or did not answer as expected."""


def _reason(exc: requests.RequestException) -> str:
    """The root cause in a few words, e.g. ``Connection refused``."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _detail(response: requests.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:200].strip() or response.reason


class TaskApi:
    """One ``requests.Session`` (retries included) for all of the runner's threads."""

    def __init__(self, base_url: str, token: str | None = None, *, pool_size: int = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry_policy(), pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, f"{self.base_url}/api/agent{path}", timeout=TIMEOUT, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"cannot reach the API at {self.base_url}: {_reason(exc)}"
            ) from exc

    def _fail(self, what: str, response: requests.Response) -> ApiError:
        return ApiError(f"{what}: the API answered {response.status_code}: {_detail(response)}")

    def pending_tasks(self) -> tuple[list[dict[str, Any]], int]:
        """Up to one page of pending tasks, oldest first, and how many are pending."""
        response = self._send(
            "GET", "/tasks", params={"status": "pending", "limit": PENDING_PAGE}
        )
        if response.status_code != 200:
            raise self._fail("listing pending tasks", response)
        try:
            body = response.json()
            return list(reversed(body["tasks"])), int(body["total"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(f"listing pending tasks: unexpected answer from {self.base_url}") \
                from exc

    def claim(self, task_id: str) -> bool:
        """Move the task to ``running``. False if another runner has it (409)."""
        response = self._send("PATCH", f"/tasks/{task_id}", json={"status": "running"})
        if response.status_code == 409:
            return False
        if response.status_code != 200:
            raise self._fail(f"claiming task {task_id}", response)
        return True

    def report(self, task_id: str, status: str, output: str, duration_seconds: float) -> None:
        response = self._send("PATCH", f"/tasks/{task_id}", json={
            "status": status, "output": output, "duration_seconds": duration_seconds,
        })
        if response.status_code != 200:
            raise self._fail(f"reporting task {task_id}", response)
