"""Which model and command a task type is routed to.

A built-in table, overridable entry by entry (and field by field) from a JSON routing
file. A command is an argv list; the elements ``{direction}`` and ``{model}`` stand for
the task's direction and model. Commands are rendered with POSIX shell quoting, so a
direction holding quotes, ``;`` or ``$(...)`` never becomes shell syntax.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from app.models.agent import ROUTING_FILE, TASK_TYPES

DIRECTION = "{direction}"
MODEL = "{model}"
CLAUDE_COMMAND = ("claude", "-p", DIRECTION, "--model", MODEL)
LOCAL_MODEL = "ollama/glm-4.7-flash:latest"
CLOUD_MODEL = "claude-3-5-haiku-20241022"


@dataclass(frozen=True)
class Route:
    task_type: str
    model: str
    tier: str
    command: tuple[str, ...]

    def argv(self, direction: str, model: str | None = None) -> list[str]:
        values = {DIRECTION: direction, MODEL: model or self.model}
        return [values.get(part, part) for part in self.command]

    def command_for(self, direction: str, model: str | None = None) -> str:
        """The command as one shell-quoted string, direction included."""
        return shlex.join(self.argv(direction, model))

    def command_template(self) -> str:
        """The command shell-quoted, with ``{direction}`` left in its place."""
        return " ".join(
            part if part == DIRECTION else shlex.quote(part) for part in self.argv(DIRECTION)
        )


BUILTIN_ROUTES = {
    task_type: Route(task_type, LOCAL_MODEL, "local", CLAUDE_COMMAND)
    for task_type in TASK_TYPES
} | {"heal": Route("heal", CLOUD_MODEL, "cloud", CLAUDE_COMMAND)}


class RoutingError(ValueError):
    """The routing file cannot be used."""


def load_routes(path: str | Path | None) -> dict[str, Route]:
    """The built-in table with the routing file's entries laid over it."""
    routes = dict(BUILTIN_ROUTES)
    if not path:
        return routes
    try:
        overrides: dict[str, dict[str, Any]] = ROUTING_FILE.deserialize(
            json.loads(Path(path).read_text())
        )
    except (OSError, ValueError, ValidationError) as exc:
        raise RoutingError(f"routing file {path}: {exc}") from exc
    for task_type, entry in overrides.items():
        if "command" in entry:
            entry["command"] = tuple(entry["command"])
        routes[task_type] = replace(routes[task_type], **entry)
    return routes
