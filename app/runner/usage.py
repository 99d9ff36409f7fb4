"""What a task used, as its command's output tells it: tokens and cost.

Two sources, read from the output as it streams (see :class:`app.runner.output.TaskOutput`):

- a Claude Code result object: ``claude -p --output-format json`` prints one JSON object
  with ``"type": "result"``, ``total_cost_usd`` and ``usage`` (the token counts), and
  ``--output-format stream-json`` one object a line, the result object last. The whole
  output, or a line of it, that is such an object counts; the last one counts, whole.
  Its token counts become the usage's, and ``total_cost_usd`` its ``cost_usd``.
- a line ``::usage:: {json}`` for other programs: a JSON object with any of
  :data:`USAGE_KEYS`, other keys left aside. The last usable line counts, whole: it
  states what the task used so far. A line that cannot be used (not a JSON object, none
  of the keys, or a value that cannot be one) is ignored, and counted for a warning.

Where both are found, the ``::usage::`` line's keys win over the result object's. A key
that nothing gave, or gave a value it cannot be (a bool, a negative number, one beyond
what the service takes, a string, tokens that are not whole), is left out: what is
unknown is never sent as 0.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens")
COST_KEY = "cost_usd"
USAGE_KEYS = (*TOKEN_KEYS, COST_KEY)
USAGE_MARK = "::usage::"
RESULT_TYPE = "result"
"""The ``type`` of Claude Code's result object."""
RESULT_COST_KEY = "total_cost_usd"
MAX_TOKENS = 2**53
"""The most tokens of a kind the service takes (exact as a float): a larger count is no
count, and a report holding one could never be delivered."""
MAX_COST_USD = 1e9
"""The most cost the service takes, for the same reason."""

Usage = dict[str, int | float]
"""Some of :data:`USAGE_KEYS`, each with a usable value."""


@dataclass(frozen=True)
class UsageLine:
    """What a ``::usage::`` line says: the usage it gives, or why it cannot be used."""

    usage: Usage = field(default_factory=dict)
    problem: str | None = None


def usable(key: str, value: Any) -> bool:
    """Whether ``value`` can be the usage's ``key``: a whole number of tokens, or a cost
    in US dollars (not NaN); never below 0 nor beyond what the service takes, never a
    bool (which JSON keeps apart from numbers)."""
    if isinstance(value, bool):
        return False
    if key == COST_KEY:
        return isinstance(value, (int, float)) and 0 <= value <= MAX_COST_USD
    return isinstance(value, int) and 0 <= value <= MAX_TOKENS


def _known(values: Mapping[str, Any], keys: tuple[str, ...]) -> Usage:
    """The ``keys`` of ``values`` whose values are usable; a cost as a float."""
    return {key: float(values[key]) if key == COST_KEY else values[key]
            for key in keys if key in values and usable(key, values[key])}


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds, if it holds one (and nothing else)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):  # too deep, or a number too long, is no object
        return None
    return found if isinstance(found, dict) else None


def result_usage(text: str) -> Usage | None:
    """The usage a Claude Code result object gives, if ``text`` is one (else None): its
    usable token counts, and ``total_cost_usd`` as ``cost_usd``."""
    found = _json_object(text)
    if found is None or found.get("type") != RESULT_TYPE:
        return None
    tokens = found.get("usage")
    usage = _known(tokens, TOKEN_KEYS) if isinstance(tokens, dict) else {}
    return {**usage, **_known({COST_KEY: found.get(RESULT_COST_KEY)}, (COST_KEY,))}


def usage_line(line: str) -> UsageLine | None:
    """What a ``::usage:: {json}`` line says; None if ``line`` is not one."""
    if not line.startswith(USAGE_MARK):
        return None
    found = _json_object(line[len(USAGE_MARK):])
    if found is None:
        return UsageLine(problem="not a JSON object")
    wrong = [key for key in USAGE_KEYS if key in found and not usable(key, found[key])]
    if wrong:
        return UsageLine(problem=f"not a usable value: {', '.join(wrong)}")
    usage = _known(found, USAGE_KEYS)
    if not usage:
        return UsageLine(problem=f"none of {', '.join(USAGE_KEYS)}")
    return UsageLine(usage)


class UsageSeen:
    """What the output has said of the task's usage so far."""

    def __init__(self) -> None:
        self._result: Usage = {}
        self._marked: Usage = {}
        self.ignored = 0
        """How many ``::usage::`` lines could not be used."""
        self.problem: str | None = None
        """Why the first of them could not be."""

    def take_line(self, said: UsageLine) -> None:
        if said.problem is None:
            self._marked = said.usage
            return
        self.ignored += 1
        self.problem = self.problem or said.problem

    def take_result(self, text: str) -> None:
        """A line of the output, or the whole output, that may be a result object."""
        found = result_usage(text)
        if found is not None:
            self._result = found

    def usage(self) -> Usage:
        return {**self._result, **self._marked}
