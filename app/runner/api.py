"""The runner's client of the task API: list pending tasks, claim one, report it."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util.retry import Retry

from app.clock import Clock, parse_iso, utc_now

log = logging.getLogger(__name__)

PENDING_PAGE = 500
"""The most tasks one listing returns (the API's largest ``limit``)."""

TIMEOUT = (3.05, 30.0)
"""Seconds to connect, and to wait for an answer once connected."""

CLAIM_CLOCK_TOLERANCE = timedelta(seconds=1)
"""How much earlier than this runner's clock the server may date a claim that is ours."""


def retry_policy() -> Retry:
    """Bounded retries with backoff (0, 1, 2 and 4 s: about 7 s in all).

    GET and PATCH are repeated on connection errors (nothing was sent) and on 502, 503
    and 504. Such an answer may come from a proxy after the service applied the PATCH,
    so a repeated PATCH that meets ``409`` is checked by ``TaskApi`` before it counts
    as refused. A read error is not retried, so that no call waits for more than one
    read timeout. ``Retry-After`` is ignored so that the wait stays bounded.
    """
    return Retry(
        total=4, connect=4, read=0, other=0, status=4,
        backoff_factor=0.5, backoff_max=4,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "PATCH"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )


def earlier_attempt_reached_service(response: requests.Response) -> bool:
    """Whether an earlier attempt of this request reached the service, so it may have
    been applied: a retry after an answer such as 504, not after a failed connection."""
    retries = getattr(response.raw, "retries", None)
    history = retries.history if retries is not None else ()
    return any(not isinstance(attempt.error, ConnectTimeoutError) for attempt in history)


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

    def __init__(
        self, base_url: str, token: str | None = None, *, pool_size: int = 10,
        clock: Clock = utc_now,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
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

    def _get(self, what: str, path: str, key: str | None = None, **params: Any) -> Any:
        """GET ``path`` and return its JSON body (or the body's ``key``)."""
        response = self._send("GET", path, params=params)
        if response.status_code != 200:
            raise self._fail(what, response)
        try:
            body = response.json()
            return body if key is None else body[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(f"{what}: unexpected answer from {self.base_url}") from exc

    def pending_tasks(self) -> list[dict[str, Any]]:
        """The oldest pending tasks, oldest first: at most ``PENDING_PAGE``."""
        return list(self._get("listing pending tasks", "/tasks", "tasks", status="pending",
                              limit=PENDING_PAGE, order="oldest"))

    def newest_pending(self) -> dict[str, Any] | None:
        """The pending task created last, if any."""
        tasks = self._get("listing pending tasks", "/tasks", "tasks", status="pending", limit=1)
        return tasks[0] if tasks else None

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self._get(f"reading task {task_id}", f"/tasks/{task_id}"))

    def claim(self, task_id: str) -> dict[str, Any] | None:
        """Move the task to ``running`` and return it whole (its ``command`` included).
        None if another runner has it (409).

        A ``409`` to a claim that was sent again after an answer such as 504 may mean
        that the first attempt was applied. The task is then taken as ours if it is
        ``running`` with a ``started_at`` no earlier than this runner's first attempt,
        less ``CLAIM_CLOCK_TOLERANCE`` for the two clocks. The rule cannot tell ours from
        another runner's claim made between the two attempts, and a runner whose clock
        differs from the service's by more than the tolerance may misjudge its own.
        """
        first_attempt = self.clock()
        response = self._send("PATCH", f"/tasks/{task_id}", json={"status": "running"})
        if response.status_code == 409:
            if not earlier_attempt_reached_service(response):
                return None
            return self._claimed_since(task_id, first_attempt)
        if response.status_code != 200:
            raise self._fail(f"claiming task {task_id}", response)
        try:
            return dict(response.json())
        except (ValueError, TypeError) as exc:
            raise ApiError(f"claiming task {task_id}: unexpected answer") from exc

    def _claimed_since(self, task_id: str, first_attempt: datetime) -> dict[str, Any] | None:
        task = self.task(task_id)
        started_at = task.get("started_at")
        ours = (task.get("status") == "running" and started_at is not None
                and parse_iso(started_at) >= first_attempt - CLAIM_CLOCK_TOLERANCE)
        log.warning("task %s: claim sent again met 409; the task is %s, started at %s: %s",
                    task_id, task.get("status"), started_at,
                    "the first attempt was applied, running it" if ours
                    else "another runner has it, skipped")
        return task if ours else None

    def report(self, task_id: str, status: str, output: str, duration_seconds: float) -> None:
        """Move the task to its final ``status``.

        A ``409`` to a report that was sent again after an answer such as 504 counts as
        delivered when the task already has that status: the first attempt was applied.
        """
        response = self._send("PATCH", f"/tasks/{task_id}", json={
            "status": status, "output": output, "duration_seconds": duration_seconds,
        })
        if (response.status_code == 409 and earlier_attempt_reached_service(response)
                and self.task(task_id).get("status") == status):
            log.info("task %s: report sent again met 409; the first attempt was applied",
                     task_id)
            return
        if response.status_code != 200:
            raise self._fail(f"reporting task {task_id}", response)
