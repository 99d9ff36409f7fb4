"""What a command may tell the runner through its output and its exit status.

- A line ``::progress:: <pct> <step text>`` sets the task's ``progress_pct`` (a number
  from 0 to 100) and ``current_step`` (the rest of the line, at most 500 characters),
  sent with the next heartbeat. A line whose number does not parse, or is out of range,
  is ordinary output.
- A line ``::retry-after:: <seconds>`` (a number from 0 to ``MAX_DELAY_SECONDS``,
  nothing after it) makes a failure worth retrying, not before that many seconds; the
  last such line counts, and one that does not parse is ordinary output. Exit status
  ``EX_TEMPFAIL`` (75) makes a failure worth retrying too, after the service's backoff.
- A line ``::usage:: {json}`` says what the task used (tokens, cost), for the final
  report; so does a Claude Code result object. See :mod:`app.runner.usage`.
- If the last non-empty line of the output is ``::needs-decision:: <question>``, the task
  ends ``needs_decision`` with that question as its ``decision_prompt``, whatever the
  command's exit status; the decision a person gives comes back in ``AGENT_DECISION``
  when the task runs again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from app.api_limits import MAX_DELAY_SECONDS, MAX_DIRECTION_CHARS, MAX_STEP_CHARS
from app.runner.usage import UsageLine, usage_line

MARK = b"::"
"""How the lines :func:`parse_line` reads begin: no other line needs decoding, but one
that may be a result object (:data:`RESULT_START`)."""
RESULT_START = b"{"
"""How a line that may be a Claude Code result object begins (see :mod:`app.runner.usage`)."""
EX_TEMPFAIL = 75
"""The exit status (``sysexits.h``) of a temporary failure: worth retrying."""

_MARKED = re.compile(r"::(progress|retry-after)::[ \t]+(\S+)[ \t]*(.*)")
_DECISION = re.compile(r"::needs-decision::[ \t]+(.*\S)")


@dataclass(frozen=True)
class Progress:
    pct: float
    step: str


@dataclass(frozen=True)
class RetryAfter:
    seconds: float


def parse_line(line: str) -> Progress | RetryAfter | UsageLine | None:
    """What a line of output tells the runner while the command runs, if anything."""
    text = line.rstrip("\r\n")
    said = usage_line(text)
    if said is not None:
        return said
    found = _MARKED.fullmatch(text)
    if found is None:
        return None
    mark, number, rest = found.groups()
    try:
        value = float(number)
    except ValueError:
        return None
    if mark == "progress":
        return Progress(value, rest.strip()[:MAX_STEP_CHARS]) if 0 <= value <= 100 else None
    if rest.strip() or not 0 <= value <= MAX_DELAY_SECONDS:
        return None
    return RetryAfter(value)


def decision_prompt(output: str) -> str | None:
    """The question of a ``::needs-decision::`` last line, if the output ends with one,
    cut to the longest ``decision_prompt`` the service takes."""
    lines = [line for line in output.splitlines() if line.strip()]
    found = _DECISION.fullmatch(lines[-1].strip()) if lines else None
    return found.group(1)[:MAX_DIRECTION_CHARS] if found else None
