"""What a command may tell the runner through its output.

- A line ``::progress:: <pct> <step text>`` sets the task's ``progress_pct`` (a number
  from 0 to 100) and ``current_step`` (the rest of the line, at most 500 characters),
  sent with the next heartbeat. A line whose number does not parse, or is out of range,
  is ordinary output.
- If the last non-empty line of the output is ``::needs-decision:: <question>``, the task
  ends ``needs_decision`` with that question as its ``decision_prompt``, whatever the
  command's exit status; the decision a person gives comes back in ``AGENT_DECISION``
  when the task runs again.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from app.api_limits import MAX_DIRECTION_CHARS, MAX_STEP_CHARS

PROGRESS_MARK = b"::progress::"

_PROGRESS = re.compile(r"::progress::[ \t]+(\S+)[ \t]*(.*)")
_DECISION = re.compile(r"::needs-decision::[ \t]+(.*\S)")


@dataclass(frozen=True)
class Progress:
    pct: float
    step: str


def parse_progress(line: str) -> Progress | None:
    """The progress a line of output announces, if it is a progress line."""
    found = _PROGRESS.fullmatch(line.rstrip("\r\n"))
    if found is None:
        return None
    try:
        pct = float(found.group(1))
    except ValueError:
        return None
    if not (math.isfinite(pct) and 0 <= pct <= 100):
        return None
    return Progress(pct, found.group(2).strip()[:MAX_STEP_CHARS])


def decision_prompt(output: str) -> str | None:
    """The question of a ``::needs-decision::`` last line, if the output ends with one,
    cut to the longest ``decision_prompt`` the service takes."""
    lines = [line for line in output.splitlines() if line.strip()]
    found = _DECISION.fullmatch(lines[-1].strip()) if lines else None
    return found.group(1)[:MAX_DIRECTION_CHARS] if found else None
