"""Reading a JSONL store without its lock: complete lines from a remembered offset of
the file, a file replaced (compaction) or rewritten noticed, an unfinished last line left
for the next read, a line that does not parse logged and skipped."""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 2 * 1024 * 1024
LINE_READ_BYTES = 16 * 1024
TAIL_BYTES = 63
HEAD_BYTES = 4096
SAMPLES, SAMPLE_BYTES = 16, 64


@dataclass
class Chunk:
    """Complete lines read in one go; ``data`` holds them without the last newline."""

    start: int
    data: bytes
    reset: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.data) + 1

    def decode(self) -> list[tuple[int, dict[str, Any]]]:
        """(offset, record) for each line that holds a JSON object."""
        offsets, records = self.decode_columns()
        return list(zip(offsets.tolist(), records))

    def decode_columns(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The records of the lines that hold a JSON object, and their lines' offsets."""
        lines = self.data.split(b"\n")
        lengths = np.fromiter(map(len, lines), np.int64, len(lines)) + 1
        offsets = self.start + np.concatenate(([0], np.cumsum(lengths[:-1])))
        try:
            values = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            values = list(map(loads_or_none, lines))
        keep = [type(value) is dict for value in values]
        if all(keep):
            return offsets, values
        for offset, line, kept in zip(offsets.tolist(), lines, keep):
            if not kept and line.strip():
                log.warning("skipping unreadable line at byte %d: %.80r", offset, line)
        return offsets[keep], [value for value, kept in zip(values, keep) if kept]

    def filled_lines(self) -> int:
        """How many lines are not blank."""
        return sum(1 for line in self.data.split(b"\n") if line.strip())


def file_identity(path: Path) -> list[int]:
    """(device, inode) of the file now at ``path``."""
    found = os.stat(path)
    return [found.st_dev, found.st_ino]


def fingerprint(fd: int, offset: int) -> str:
    """A hash of the file's first HEAD_BYTES and of SAMPLES short stretches spread over
    the rest, up to ``offset``: what tells a file from another one that took its inode."""
    digest = hashlib.blake2b(os.pread(fd, min(offset, HEAD_BYTES), 0), digest_size=16)
    if offset > HEAD_BYTES:
        for sample in range(SAMPLES):
            digest.update(os.pread(fd, SAMPLE_BYTES, HEAD_BYTES + (offset - HEAD_BYTES)
                                   * sample // SAMPLES))
    return digest.hexdigest()


def loads_or_none(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


class LogReader:
    """Follows one log file from a remembered offset.

    It remembers which file (device and inode) the offset belongs to, so a file replaced
    by rename (compaction) is noticed, and a file truncated or rewritten in place is
    noticed by its size, or by its first HEAD_BYTES or the last bytes read no longer
    standing where they were read (a rewrite to the same size that keeps both is not
    noticed: the store is appended to, never rewritten in place); either way the next
    poll starts over from the beginning with ``reset`` set. It may be closed (before a
    fork, say) and carries on at the next poll.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._seen_tail = b""
        self._seen_head = b""
        self._identity: list[int] | None = None
        self._handle: Any = None

    def close(self) -> None:
        """Close the file; the next poll opens it again and goes on from the offset."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _forget(self) -> None:
        self.offset, self._seen_tail, self._seen_head, self._identity = 0, b"", b"", None

    def _moved_on(self) -> bool:
        """Whether the file at the path is no longer the one the offset belongs to."""
        fd = self._handle.fileno()
        held = os.fstat(fd)
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (
            [held.st_dev, held.st_ino] != self._identity
            or [on_disk.st_dev, on_disk.st_ino] != self._identity
            or held.st_size < self.offset
            or os.pread(fd, len(self._seen_tail), self.offset - len(self._seen_tail))
            != self._seen_tail
            or os.pread(fd, len(self._seen_head), 0) != self._seen_head
        )

    def _open(self) -> bool:
        try:
            self._handle = open(self.path, "rb")
        except FileNotFoundError:
            return False
        if self._identity is None:
            held = os.fstat(self._handle.fileno())
            self._identity = [held.st_dev, held.st_ino]
        return True

    def read_line_at(self, offset: int) -> dict[str, Any] | None:
        """The record on the line starting at ``offset`` of the file being followed."""
        if self._handle is None:
            return None
        fd, parts = self._handle.fileno(), []
        while block := os.pread(fd, LINE_READ_BYTES, offset):
            end = block.find(b"\n")
            parts.append(block if end < 0 else block[:end])
            if end >= 0:
                break
            offset += len(block)
        value = loads_or_none(b"".join(parts))
        return value if type(value) is dict else None

    def rewind(self) -> None:
        """Forget what was read, as if new: for a follower whose state no longer matches
        the offset (it failed to take a chunk in, after the offset had moved past it)."""
        self.close()
        self._forget()

    def identity(self) -> list[int] | None:
        """(device, inode) of the file being followed, None before it is opened."""
        return self._identity

    def position(self) -> dict[str, Any] | None:
        """Which bytes of which file have been read, as :meth:`resume` takes it: the
        file's identity, the offset, the bytes just before it and a fingerprint of the
        bytes before that."""
        if self._handle is None or self._identity is None:
            return None
        return {"identity": self._identity, "offset": self.offset,
                "tail": self._seen_tail.hex(),
                "fingerprint": fingerprint(self._handle.fileno(), self.offset)}

    def resume(self, position: dict[str, Any]) -> bool:
        """Go on from a :meth:`position` taken earlier (by any process) if the file at
        the path is still the one it describes, with the same bytes where they are
        checked: then the next poll reads only what comes after. False, with nothing
        changed, otherwise."""
        try:
            identity, offset = list(position["identity"]), int(position["offset"])
            tail = bytes.fromhex(position["tail"])
            handle = open(self.path, "rb")
        except (KeyError, TypeError, ValueError, OSError):
            return False
        fd = handle.fileno()
        found = os.fstat(fd)
        if ([found.st_dev, found.st_ino] != identity or found.st_size < offset
                or len(tail) > offset or os.pread(fd, len(tail), offset - len(tail)) != tail
                or fingerprint(fd, offset) != position.get("fingerprint")):
            handle.close()
            return False
        self.close()
        self._handle, self._identity = handle, identity
        self.offset, self._seen_tail, self._seen_head = offset, tail, b""
        self._keep_head()
        return True

    def _keep_head(self) -> None:
        """Remember the file's first bytes read, up to HEAD_BYTES (read again only while
        the file is shorter than that)."""
        if len(self._seen_head) < HEAD_BYTES:
            self._seen_head = os.pread(self._handle.fileno(), min(self.offset, HEAD_BYTES), 0)

    def unfinished_line(self) -> bytes:
        """What follows the last complete line read (empty if nothing does)."""
        if self._handle is None:
            return b""
        self._handle.seek(self.offset)
        return self._handle.read()

    def read_range(self, start: int, end: int) -> Iterator[Chunk]:
        """Complete lines between two line boundaries of the file being followed."""
        if self._handle is not None:
            yield from _line_chunks(self._handle, start, end)

    def poll_chunks(self) -> Iterator[Chunk]:
        """Everything appended since the last poll, as chunks of complete lines; the
        first has ``reset`` set when the file was replaced or truncated."""
        reset = False
        if self._handle is None:
            self._open()
        if self._handle is not None and self._moved_on():
            self.close()
            reset = self.offset > 0
            self._forget()
            self._open()
        elif self._handle is None and self.offset > 0:
            self._forget()
            reset = True
        if self._handle is not None:
            for chunk in _line_chunks(self._handle, self.offset):
                self.offset = chunk.end
                self._seen_tail = (chunk.data[-TAIL_BYTES:] if chunk.data else b"") + b"\n"
                self._keep_head()
                chunk.reset, reset = reset, False
                yield chunk
        if reset:
            yield Chunk(0, b"", reset=True)


@contextmanager
def rewound_on_error(reader: LogReader, start_over: Callable[[], None]) -> Iterator[None]:
    """For a follower taking in what ``reader`` polls: if that fails, the reader is
    rewound and ``start_over()`` called, so the next read takes the file in again
    instead of going on past lines it never took in (the offset moves before a chunk is
    handed out)."""
    try:
        yield
    except Exception:
        reader.rewind()
        start_over()
        raise


def _line_chunks(handle: Any, start: int, end: int | None = None) -> Iterator[Chunk]:
    """Complete lines from ``start`` (to ``end``) in chunks of about READ_CHUNK_BYTES.

    It seeks before every read, so the handle may be used for other reads in between.
    """
    carry = b""
    while end is None or start + len(carry) < end:
        position = start + len(carry)
        size = READ_CHUNK_BYTES if end is None else min(READ_CHUNK_BYTES, end - position)
        handle.seek(position)
        data = handle.read(size)
        if not data:
            return
        data = carry + data
        last = data.rfind(b"\n")
        if last < 0:
            carry = data
            continue
        carry = data[last + 1:]
        yield Chunk(start, data[:last])
        start += last + 1
