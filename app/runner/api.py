"""The runner's client of the task API: who its token is, claim a task, renew its lease,
report it.

Everything the runner needs from the service goes through here, over HTTP: it needs the
service's address and token, nothing of its files.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from app.shared_settings import authorization

log = logging.getLogger(__name__)

TIMEOUT = (3.05, 30.0)
"""Seconds to connect, and to wait for an answer once connected."""


def retry_policy() -> Retry:
    """Bounded retries with backoff (0, 1, 2 and 4 s: about 7 s in all) on connection
    errors (nothing was sent) and on 502, 503 and 504.

    Each request the runner sends may be repeated. GET only reads. A heartbeat PATCH
    renews a lease, and a final report sent again is taken once: the service answers the
    repeat ``200``, or ``409``, which :meth:`TaskApi.report` settles by reading the task.
    The only POST is the claim, and a claim repeated under the same ``runner_id`` returns
    the task that ``runner_id`` already holds, so it takes nothing more. A read error is
    not retried, so that no call waits for more than one read timeout: a lost answer is
    settled by the next claim, or by the outbox for a report. ``Retry-After`` is ignored
    so that the wait stays bounded.
    """
    return Retry(
        total=4, connect=4, read=0, other=0, status=4,
        backoff_factor=0.5, backoff_max=4,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "PATCH", "POST"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )


class ApiError(Exception):
    """The API did not answer as expected; the request may succeed later."""


class ApiUnreachable(ApiError):
    """No answer at all: the service is down, or the network between."""


class ReportRefused(Exception):
    """The API will never take this report: the task has moved on without it."""


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
            self.session.headers["Authorization"] = authorization(token)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              **kwargs: Any) -> requests.Response:
        """Send one request. A body goes as UTF-8 JSON, not ASCII-escaped, so that output
        in any script costs its own size against the service's body limit."""
        if body is not None:
            kwargs.update(data=json.dumps(body, ensure_ascii=False).encode(),
                          headers={"Content-Type": "application/json"})
        try:
            return self.session.request(
                method, f"{self.base_url}/api{path}", timeout=TIMEOUT, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiUnreachable(
                f"cannot reach the API at {self.base_url}: {_reason(exc)}"
            ) from exc

    def _fail(self, what: str, response: requests.Response) -> ApiError:
        return ApiError(f"{what}: the API answered {response.status_code}: {_detail(response)}")

    def _json(self, what: str, response: requests.Response) -> dict[str, Any]:
        try:
            return dict(response.json())
        except (ValueError, TypeError) as exc:
            raise ApiError(f"{what}: unexpected answer from {self.base_url}") from exc

    def whoami(self) -> dict[str, Any] | None:
        """The token's ``name`` and ``role`` as the service sees them; None when the
        service does not say (an older one answers ``404``)."""
        response = self._send("GET", "/whoami")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail("asking who the token is", response)
        return self._json("asking who the token is", response)

    def probe(self) -> None:
        """Check that the API answers and takes the token (a listing of one task)."""
        response = self._send("GET", "/agent/tasks", params={"limit": 1})
        if response.status_code != 200:
            raise self._fail("reading the task list", response)

    def claim(self, runner_id: str, lease_seconds: int) -> dict[str, Any] | None:
        """The oldest pending task, now ``running`` under a lease of ``runner_id`` (or the
        task that ``runner_id`` holds already); None when none is pending."""
        response = self._send("POST", "/agent/tasks/claim", {
            "runner_id": runner_id, "lease_seconds": lease_seconds})
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise self._fail("claiming a task", response)
        return self._json("claiming a task", response)

    def heartbeat(self, task_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Renew the lease, sending ``body`` (progress, output): the task as the service
        has it now (``cancel_requested`` among its fields), or None if another runner
        holds the task now (``409``)."""
        what = f"heartbeat of task {task_id}"
        response = self._send("PATCH", f"/agent/tasks/{task_id}", body)
        if response.status_code == 409:
            return None
        if response.status_code != 200:
            raise self._fail(what, response)
        return self._json(what, response)

    def report(self, task_id: str, body: dict[str, Any]) -> None:
        """Deliver a final report.

        ``409`` is settled by reading the task: if it has the reported status, an earlier
        copy of this report was applied (its answer was lost), so it counts as delivered;
        otherwise :class:`ReportRefused` is raised, as for ``404`` and ``403`` (a token
        that may not report it, or read it any more), naming the runner that holds the
        task if the task names another one. Any other answer raises :class:`ApiError`:
        the report may be taken later.
        """
        response = self._send("PATCH", f"/agent/tasks/{task_id}", body)
        if response.status_code == 200:
            return
        if response.status_code == 404:
            raise ReportRefused(f"the API does not know task {task_id}")
        if response.status_code == 403:
            raise ReportRefused(f"the token may not report it: {_detail(response)}")
        if response.status_code != 409:
            raise self._fail(f"reporting task {task_id}", response)
        seen = self._send("GET", f"/agent/tasks/{task_id}")
        if seen.status_code == 403:  # a run token reads only its own runners' tasks
            raise ReportRefused(f"the API refused it with 409, \"{_detail(response)}\"; "
                                "another runner host holds the task now")
        if seen.status_code != 200:
            raise self._fail(f"reading task {task_id}", seen)
        task = self._json(f"reading task {task_id}", seen)
        if task.get("status") != body["status"]:
            holder = task.get("runner_id")
            held = (f", held by runner {holder}" if holder not in (None, body["runner_id"])
                    else "")
            raise ReportRefused(f"the API refused it with 409, \"{_detail(response)}\"; "
                                f"the task is {task.get('status')} now{held}")
        log.info("task %s: report met 409, but the task is %s already: an earlier copy "
                 "was applied", task_id, body["status"])
