"""The string fields of the requests: text every store can keep.

PostgreSQL cannot keep a NUL character (U+0000) in a text column nor in JSON it reads,
while the JSONL files can, so a request holding one would be taken by one backend and
fail on the other. The schemas settle it before any store sees it, the same for both:

- :class:`Text`, free text (a direction, output, a log, a reason...): each NUL becomes
  U+FFFD, the replacement character, so a command's raw output is never refused;
- :class:`Name`, an identifier or key (a runner id, a model, a filter...): a NUL is
  refused (422), since a changed name would name something else;
- :class:`JsonObject`, an object of any JSON (a task's ``context``): NUL is refused in
  its keys, at any depth, and replaced in its string values.

Every string a request schema loads is one of these (``tests/api/test_text_fields.py``).
"""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields

NUL = "\x00"
REPLACEMENT = "\ufffd"
MAX_NAME_CHARS = 200
"""The longest identifier: a runner id, a task id."""
NUL_IN_NAME = "Must not contain a NUL character (U+0000)."


def replace_nul(text: str) -> str:
    """Free text as the stores keep it: each NUL replaced by U+FFFD."""
    return text.replace(NUL, REPLACEMENT)


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be an identifier of the service (a task id, a runner id),
    or None if it can."""
    if NUL in value:
        return NUL_IN_NAME
    if len(value) > MAX_NAME_CHARS:
        return f"Longer than {MAX_NAME_CHARS} characters."
    return None


class Text(fields.String):
    """Free text: a NUL character is kept as U+FFFD."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return replace_nul(super()._deserialize(value, attr, data, **kwargs))


class Name(fields.String):
    """An identifier or key: one holding a NUL character is refused."""

    default_error_messages = {"nul": NUL_IN_NAME}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        name = super()._deserialize(value, attr, data, **kwargs)
        if NUL in name:
            raise self.make_error("nul")
        return name


def _storable(value: Any) -> Any:
    """A JSON value with NUL replaced in its strings; ValidationError for a key with one."""
    if isinstance(value, str):
        return replace_nul(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        if any(NUL in key for key in value):
            raise ValidationError(f"Keys: {NUL_IN_NAME}")
        return {key: _storable(item) for key, item in value.items()}
    return value


class JsonObject(fields.Dict):
    """A JSON object: a key holding a NUL character is refused, at any depth, and each
    NUL of its string values is kept as U+FFFD."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keys=fields.String(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return _storable(super()._deserialize(value, attr, data, **kwargs))
