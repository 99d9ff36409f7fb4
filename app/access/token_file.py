"""``AGENT_API_TOKENS_FILE``: named tokens with roles, of which only hashes are kept.

The file is ``{"tokens": [{"name": str, "role": str, "sha256": hex}]}``. A server reads
it at start, where a malformed file is a :class:`~app.shared_settings.ConfigError`, and
again whenever it changes (its inode, size or modification time), so tokens rotate
without a restart; a malformed new version is logged and the last good one kept. A file
that does not exist holds no token: every request is refused until ``flask tokens add``
writes one.

``flask tokens`` changes the file under ``<file>.lock`` and replaces it by rename, so a
server never reads half of it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.access.roles import ROLES
from app.shared_settings import ConfigError

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""A token's name also starts the runner ids of a ``run`` token (``<name>/...``)."""
SECRET_BYTES = 32
LOCK_TIMEOUT_SECONDS = 10
"""How long ``flask tokens`` waits for another one changing the file."""


class _TokenEntrySchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(NAME_PATTERN))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))


class _TokenFileSchema(Schema):
    tokens = fields.List(fields.Nested(_TokenEntrySchema), required=True)

    @validates_schema
    def _unique_names(self, data: dict[str, Any], **_: Any) -> None:
        names = [entry["name"] for entry in data["tokens"]]
        if len(set(names)) != len(names):
            raise ValidationError("token names must be unique", "tokens")


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _parsed(path: Path) -> list[Token]:
    """The tokens of the file ([] if it does not exist); ConfigError if it is malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"AGENT_API_TOKENS_FILE {path} cannot be read: {exc}") from exc
    try:
        loaded = _TokenFileSchema().load(json.loads(text))
    except (ValueError, ValidationError) as exc:
        detail = exc.messages if isinstance(exc, ValidationError) else exc
        raise ConfigError(f"AGENT_API_TOKENS_FILE {path} is malformed: {detail}") from exc
    return [Token(**entry) for entry in loaded["tokens"]]


def _version(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of the file from another; None when it cannot be seen
    (reading it then says why)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class TokenFile:
    """The tokens of one file, as of its last good version."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reading = threading.Lock()
        self._version = _version(self.path)
        self._tokens = _parsed(self.path)
        if self._version is None:
            log.warning("AGENT_API_TOKENS_FILE %s does not exist: no token is accepted "
                        "until `flask tokens add` writes one", self.path)

    def _refresh(self) -> None:
        """Read the file again if it changed. Under a lock, so that no thread of the
        process goes on with the tokens of before once another has seen the change."""
        with self._reading:
            version = _version(self.path)
            if version == self._version:
                return
            self._version = version
            try:
                self._tokens = _parsed(self.path)
            except ConfigError as exc:
                log.error("%s; the tokens read before stay in use", exc)
                return
        log.info("AGENT_API_TOKENS_FILE %s read again: %d tokens", self.path,
                 len(self._tokens))

    def find(self, secret: str) -> Token | None:
        """The token whose hash is the secret's (each compared in constant time)."""
        self._refresh()
        presented = digest(secret)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(presented, token.sha256):
                found = token
        return found


def _write(path: Path, tokens: list[Token]) -> None:
    text = json.dumps({"tokens": [vars(token) for token in tokens]}, indent=2) + "\n"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class TokenFileEditor:
    """Changes of the file, each under its lock: read, change, replace."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT_SECONDS)

    def tokens(self) -> list[Token]:
        return _parsed(self.path)

    def add(self, name: str, role: str) -> str:
        """Add a token; its secret, which is kept nowhere."""
        errors = _TokenEntrySchema().validate({"name": name, "role": role, "sha256": "0" * 64})
        if errors:
            raise ConfigError("; ".join(f"{field}: {' '.join(messages)}"
                                        for field, messages in errors.items()))
        secret = secrets.token_urlsafe(SECRET_BYTES)
        with self._lock:
            tokens = _parsed(self.path)
            if any(token.name == name for token in tokens):
                raise ConfigError(f"a token named {name!r} exists already; revoke it first")
            _write(self.path, [*tokens, Token(name, role, digest(secret))])
        return secret

    def revoke(self, name: str) -> bool:
        """Remove the token of this name; whether there was one."""
        with self._lock:
            tokens = _parsed(self.path)
            kept = [token for token in tokens if token.name != name]
            if len(kept) != len(tokens):
                _write(self.path, kept)
        return len(kept) != len(tokens)
