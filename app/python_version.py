"""Refuse an interpreter older than the code needs, in one line.

Imported first by ``app/__init__.py``, before any module that may not even import on an
older Python, so every entry point (the server, the ``flask`` commands, the runner, the
smoke check) stops with this line instead of a traceback from deeper in. It must itself
import on old interpreters: no syntax or library newer than Python 3.7 here.
"""
from __future__ import annotations

import sys

MINIMUM = (3, 11)


def require_supported_python(version: tuple[int, ...] | None = None) -> None:
    """Raise :class:`SystemExit` with one line when ``version`` (default: this
    interpreter's) is older than :data:`MINIMUM`."""
    found = tuple(sys.version_info if version is None else version)
    if found[:2] < MINIMUM:
        raise SystemExit(
            "agent-metrics-service needs Python %d.%d or newer; %s is Python %s"
            % (MINIMUM + (sys.executable or "this interpreter",
                          ".".join(str(part) for part in found[:3]))))
