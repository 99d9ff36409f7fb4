"""How a run ended, and the final report that says so.

A run ends ``completed`` (exit status 0), ``needs_decision`` (the output's last line asks
for a decision), ``cancelled`` (someone asked to cancel the task, and the runner stopped
its command), or ``failed``. A failure is worth retrying (``retryable``) when the command
exited ``EX_TEMPFAIL``, printed a ``::retry-after::`` line (whose seconds go along as
``retry_after_seconds``), or ran out of time: the service then sends the task back to
``pending`` while attempts remain. See :mod:`app.runner.conventions`.

A report that ends the task (:data:`ENDING_STATUSES`) names the runner's ``executor``; a
``completed`` or ``failed`` one carries what the task used, as far as its output said
(:mod:`app.runner.usage`). The service takes neither with ``needs_decision``, which
sends the task back to ``pending``: the run that ends it names itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.runner.conventions import EX_TEMPFAIL
from app.runner.execution import Cause, Ended
from app.runner.usage import Usage

ENDING_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Outcome:
    status: str
    """``completed``, ``failed``, ``needs_decision`` or ``cancelled``."""
    duration_seconds: float
    decision_prompt: str | None = None
    retryable: bool = False
    retry_after_seconds: float | None = None
    usage: Usage = field(default_factory=dict)
    """What the task used, the keys known only."""

    def report(self, runner_id: str, output: str, log_append: str, *,
               executor: str) -> dict[str, Any]:
        """The body of the final report: ``output`` is the end of the output, and
        ``log_append`` what no heartbeat has sent."""
        body: dict[str, Any] = {"runner_id": runner_id, "status": self.status,
                                "output": output, "duration_seconds": self.duration_seconds}
        if self.status in ENDING_STATUSES:
            body["executor"] = executor
        if log_append:
            body["log_append"] = log_append
        if self.decision_prompt is not None:
            body["decision_prompt"] = self.decision_prompt
        if self.retryable:
            body["retryable"] = True
        if self.retry_after_seconds is not None:
            body["retry_after_seconds"] = self.retry_after_seconds
        if self.usage:
            body["usage"] = self.usage
        return body


def judge(ended: Ended, duration_seconds: float, *, prompt: str | None, failed: bool,
          retry_after: float | None, usage: Usage) -> Outcome:
    """The outcome of a run that ``ended`` so, whose output asked for a decision
    (``prompt``) or not, that ``failed`` or not, whose last ``::retry-after::`` line
    said ``retry_after`` seconds, if it had one, and that said it used ``usage``."""
    if prompt is not None:
        return Outcome("needs_decision", duration_seconds, decision_prompt=prompt)
    if not failed:
        return Outcome("completed", duration_seconds, usage=usage)
    if ended.cause is Cause.CANCELLED:
        return Outcome("cancelled", duration_seconds)
    retryable = (ended.exit_code == EX_TEMPFAIL or retry_after is not None
                 or ended.cause is Cause.TIMEOUT)
    return Outcome("failed", duration_seconds, retryable=retryable,
                   retry_after_seconds=retry_after, usage=usage)
