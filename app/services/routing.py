"""Which model and command a task type is routed to.

A built-in table, overridable entry by entry (and field by field) from a JSON routing
file. A command is an argv list; the elements ``{direction}``, ``{model}`` and
``{decision}`` stand for the task's direction, its model, and the decision a person gave
it after it asked for one (empty until then). Commands are rendered with POSIX shell quoting, so a
direction holding quotes, ``;`` or ``$(...)`` never becomes shell syntax.

A direction (or a decision) is whatever a person wrote, so it must never be read as an
option by the routed program (``--output-file=/tmp/x``): ``{direction}`` and
``{decision}`` have to come after an end-of-options ``--`` element, unless an entry says
that its CLI takes no ``--`` (``"accepts_end_of_options": false``); then a direction
starting with ``-`` is refused when the task is created.

An entry may also bound how many times a task of its type is claimed (``max_attempts``)
and how long a retryable failure waits before the next attempt (``backoff_seconds``,
doubling per attempt up to ``backoff_max_seconds``); the file's ``limits`` cap how many
tasks of a model, or of a tier, run at once, and its ``prices`` what a model's tokens
cost (the cost of a run whose report gives none).
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from app.config import ConfigError
from app.models.agent import TOKEN_FIELDS, RoutingFileSchema, TASK_TYPES
from app.shared_settings import CLAUDE_PROGRAM

DIRECTION = "{direction}"
MODEL = "{model}"
DECISION = "{decision}"
FREE_TEXT = (DIRECTION, DECISION)
END_OF_OPTIONS = "--"
CLAUDE_COMMAND = (CLAUDE_PROGRAM, "-p", "--model", MODEL, END_OF_OPTIONS, DIRECTION)
LOCAL_MODEL = "ollama/glm-4.7-flash:latest"
CLOUD_MODEL = "claude-3-5-haiku-20241022"
DEFAULT_BACKOFF_SECONDS = 30.0
DEFAULT_BACKOFF_MAX_SECONDS = 900.0


@dataclass(frozen=True)
class Route:
    task_type: str
    model: str
    tier: str
    command: tuple[str, ...]
    accepts_end_of_options: bool = True
    max_attempts: int | None = None
    """None: the service's default (``AGENT_MAX_ATTEMPTS``)."""
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS

    def argv(
        self, direction: str, model: str | None = None, decision: str | None = None
    ) -> list[str]:
        values = {DIRECTION: direction, MODEL: model or self.model, DECISION: decision or ""}
        return [values.get(part, part) for part in self.command]

    def command_for(
        self, direction: str, model: str | None = None, decision: str | None = None
    ) -> str:
        """The command as one shell-quoted string, direction included."""
        return shlex.join(self.argv(direction, model, decision))

    def command_template(self) -> str:
        """The command shell-quoted, with ``{direction}`` left in its place."""
        return " ".join(
            part if part in FREE_TEXT else shlex.quote(part)
            for part in self.argv(DIRECTION, decision=DECISION)
        )

    def direction_is_safe(self, direction: str) -> bool:
        """Whether the routed program cannot take ``direction`` for an option."""
        return self.accepts_end_of_options or not direction.startswith("-")

    def problem(self) -> str | None:
        """What makes this route unsafe to run, if anything."""
        if not self.accepts_end_of_options:
            return None
        for placeholder in FREE_TEXT:
            if placeholder not in self.command:
                continue
            if END_OF_OPTIONS not in self.command[:self.command.index(placeholder)]:
                return (f'{placeholder} must come after a "{END_OF_OPTIONS}" element (end of '
                        'options) so that what a person wrote is never taken for an option; '
                        f'for a CLI that takes no "{END_OF_OPTIONS}", set '
                        '"accepts_end_of_options": false')
        return None


@dataclass(frozen=True)
class Limits:
    """How many tasks may run at once: per model, and per tier (every model a route of
    that tier names, counted together)."""

    models: Mapping[str, int] = field(default_factory=dict)
    tiers: Mapping[str, int] = field(default_factory=dict)


TOKEN_PRICES = dict(zip(TOKEN_FIELDS, (
    "input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_creation_per_mtok")))
"""The price, per million tokens, of each kind of token a usage report counts."""
COST_DIGITS = 10
"""Costs are rounded to this many decimals, so sums of prices do not show float noise."""


@dataclass(frozen=True)
class Prices:
    """USD per million tokens of each kind, for one model; None: no price."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    cache_read_per_mtok: float | None = None
    cache_creation_per_mtok: float | None = None

    def cost(self, tokens: Mapping[str, int]) -> float | None:
        """What these token counts (by field of ``TOKEN_FIELDS``) cost; None, unknown,
        without any count, or when a kind with tokens has no price."""
        if not tokens:
            return None
        total = 0.0
        for kind, count in tokens.items():
            price = getattr(self, TOKEN_PRICES[kind])
            if count and price is None:
                return None
            total += count * (price or 0) / 1e6
        return round(total, COST_DIGITS)


@dataclass(frozen=True)
class Routing:
    """The routes by task type, every model a task may be given, the limits, and the
    token prices by model."""

    routes: Mapping[str, Route]
    extra_models: frozenset[str] = frozenset()
    limits: Limits = Limits()
    prices: Mapping[str, Prices] = field(default_factory=dict)

    def route(self, task_type: str) -> Route:
        return self.routes[task_type]

    @property
    def models(self) -> frozenset[str]:
        return frozenset(route.model for route in self.routes.values()) | self.extra_models

    def tiers_of(self, model: str) -> frozenset[str]:
        """The tiers of the routes that name ``model`` (none for a model only listed)."""
        return frozenset(route.tier for route in self.routes.values() if route.model == model)

    def tier_models(self, tier: str) -> frozenset[str]:
        """The models the routes of ``tier`` name."""
        return frozenset(route.model for route in self.routes.values() if route.tier == tier)


BUILTIN_ROUTES = {
    task_type: Route(task_type, LOCAL_MODEL, "local", CLAUDE_COMMAND)
    for task_type in TASK_TYPES
} | {"heal": Route("heal", CLOUD_MODEL, "cloud", CLAUDE_COMMAND)}


class RoutingError(ConfigError):
    """The routing file cannot be used."""


def _flatten(messages: Any, where: str = "") -> list[str]:
    """marshmallow's nested messages as ``field.subfield: message`` lines."""
    if isinstance(messages, dict):
        return [line for key, value in messages.items()
                for line in _flatten(value, f"{where}.{key}" if where else str(key))]
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return [f"{where or 'file'}: {' '.join(messages)}"]
    return [f"{where or 'file'}: {messages}"]


def load_routing(path: str | Path | None) -> Routing:
    """The built-in table with the routing file's entries laid over it.

    Raises :class:`RoutingError` with a one-line message naming the file and the entry.
    """
    if not path:
        return Routing(BUILTIN_ROUTES)
    try:
        loaded: dict[str, Any] = RoutingFileSchema().load(json.loads(Path(path).read_text()))
    except OSError as exc:
        raise RoutingError(f"routing file {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise RoutingError(f"routing file {path}: {'; '.join(_flatten(exc.messages))}") from exc
    except ValueError as exc:  # not JSON
        raise RoutingError(f"routing file {path}: {exc}") from exc
    routes = dict(BUILTIN_ROUTES)
    for task_type in TASK_TYPES:
        entry = loaded.get(task_type)
        if entry is None:
            continue
        if "command" in entry:
            entry["command"] = tuple(entry["command"])
        routes[task_type] = route = replace(routes[task_type], **entry)
        problem = route.problem()
        if problem:
            raise RoutingError(f'routing file {path}: entry "{task_type}": {problem}')
    return Routing(routes, frozenset(loaded.get("models", ())),
                   Limits(**loaded.get("limits", {})),
                   {model: Prices(**prices) for model, prices in loaded.get("prices", {}).items()})
