"""The one place that knows how a store sits on disk.

A store is an append-only JSONL file with a lock file beside it (``<name>.lock``).
Writers append whole lines under the lock and flush (and by default fsync) before they
return, so an acknowledged line is on disk. Readers never need the lock: they consume
complete lines from a remembered offset and leave an unfinished last line for the next
read. A line that does not parse is logged and skipped.

A crashed writer can leave a torn last line with no newline. The next append starts
with a newline, so the torn fragment becomes a line of its own (skipped as corrupt)
instead of swallowing the record written after it. An append that fails (disk full)
cuts the file back to where it began, so a failed write leaves nothing behind.

Compaction (:meth:`JsonlLog.rewrite`) writes the kept records to a new file and renames
it over the log, under the lock; readers notice the new inode and start over.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock

log = logging.getLogger(__name__)

Selector = Callable[[Iterator[dict[str, Any]]], Iterable[dict[str, Any]]]
"""Given a log's records in order, yields the ones a rewrite keeps."""

LOCK_POLL_SECONDS = 0.001
READ_CHUNK_BYTES = 8 * 1024 * 1024


class StoreUnavailable(OSError):
    """The store could not be written (folder not writable, disk full...)."""


@dataclass
class Batch:
    """Lines read by one poll: ``reset`` means the file was replaced or truncated
    and ``records`` start again from the beginning of the new file. ``unreadable``
    counts the non-blank lines skipped because they did not parse."""

    reset: bool = False
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    unreadable: int = 0


def encode_line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


class JsonlLog:
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = FileLock(f"{self.path}.lock", poll_interval=LOCK_POLL_SECONDS)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: for read-check-append sequences. Re-entrant."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise StoreUnavailable(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            yield
        finally:
            self._lock.release()

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records as lines, durably, under the lock."""
        payload = b"".join(encode_line(record) for record in records)
        if not payload:
            return
        with self.locked():
            try:
                with open(self.path, "a+b", buffering=0) as handle:
                    if _ends_torn(handle):
                        payload = b"\n" + payload
                    start = handle.tell()
                    try:
                        _write_all(handle, payload, fsync=self.fsync)
                    except OSError:
                        handle.truncate(start)
                        raise
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot append to {self.path}: {exc.strerror or exc}"
                ) from exc

    def rewrite(self, keep: Selector) -> int:
        """Replace the log by ``keep(records)``, atomically, under the lock.

        ``keep`` gets every parseable record in file order and yields those to keep. They
        go to a temporary file in the same folder, which is fsynced and renamed over the
        log; then the folder is fsynced so the rename itself is durable. Appends wait for
        the lock meanwhile, so none is lost; a failure leaves the log as it was. Lines
        that do not parse, and an unfinished last line, are left out. Returns how many
        lines were left out because they did not parse.
        """
        unreadable = 0

        def records() -> Iterator[dict[str, Any]]:
            nonlocal unreadable
            for batch in reader.poll():
                unreadable += batch.unreadable
                yield from (record for _, record in batch.records)

        with self.locked():
            reader = self.reader()
            temporary = None
            try:
                with tempfile.NamedTemporaryFile(
                    dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp",
                    delete=False,
                ) as handle:
                    temporary = handle.name
                    for record in keep(records()):
                        handle.write(encode_line(record))
                    handle.flush()
                    os.fsync(handle.fileno())
                _copy_mode(self.path, temporary)
                os.replace(temporary, self.path)
                temporary = None
                _fsync_folder(self.path.parent)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot rewrite {self.path}: {exc.strerror or exc}"
                ) from exc
            finally:
                reader.close()
                if temporary is not None:
                    _remove_quietly(temporary)
        return unreadable

    def writable(self) -> bool:
        """Whether an append could succeed now: the file opens for append and space is left."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):
                pass
            with open(f"{self.path}.lock", "ab"):
                pass
            free = os.statvfs(self.path.parent)
        except OSError:
            return False
        return free.f_bavail > 0

    def reader(self) -> LogReader:
        return LogReader(self.path)

    def read_line_at(self, offset: int) -> dict[str, Any] | None:
        """The record on the line starting at ``offset`` (None if it does not parse)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                return _decode(handle.readline(), offset)
        except OSError:
            return None


def _write_all(handle: Any, payload: bytes, *, fsync: bool) -> None:
    """Write every byte through an unbuffered handle (a raw write may write part)."""
    view = memoryview(payload)
    while view:
        view = view[handle.write(view):]
    if fsync:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copy_mode(original: Path, replacement: str) -> None:
    """Give the new file the old one's permissions (a temporary file starts private)."""
    try:
        os.chmod(replacement, os.stat(original).st_mode & 0o7777)
    except FileNotFoundError:
        pass


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _ends_torn(handle: Any) -> bool:
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    return handle.read(1) != b"\n"


def _decode(line: bytes, offset: int) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    if line.strip():
        log.warning("skipping unreadable line at byte %d: %.80r", offset, line)
    return None


class LogReader:
    """Follows one log file from a remembered offset.

    It keeps the file open, so a file replaced by rename (compaction) is noticed by its
    inode and a file truncated in place by its size; either way the next poll starts
    over from the beginning with ``reset`` set.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._handle: Any = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _replaced_or_truncated(self) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return self.offset > 0
        held = os.fstat(self._handle.fileno())
        return (on_disk.st_ino, on_disk.st_dev) != (held.st_ino, held.st_dev) or (
            held.st_size < self.offset
        )

    def _open(self) -> bool:
        try:
            self._handle = open(self.path, "rb")
        except FileNotFoundError:
            return False
        return True

    def poll(self) -> Iterator[Batch]:
        """Everything appended since the last poll, as batches of complete parsed lines.

        The first batch has ``reset`` set when the file was replaced or truncated.
        """
        reset = False
        if self._handle is not None and self._replaced_or_truncated():
            self.close()
            reset, self.offset = self.offset > 0, 0
        if self._handle is None and not self._open():
            if reset:
                yield Batch(reset=True)
            return
        for chunk_start, lines in self._chunks():
            batch, reset = Batch(reset=reset), False
            position = chunk_start
            for line in lines:
                record = _decode(line, position)
                if record is not None:
                    batch.records.append((position, record))
                elif line.strip():
                    batch.unreadable += 1
                position += len(line) + 1
            yield batch
        if reset:
            yield Batch(reset=True)

    def _chunks(self) -> Iterator[tuple[int, list[bytes]]]:
        """Complete lines after ``offset`` in chunks of bounded size; advances the offset."""
        handle = self._handle
        handle.seek(self.offset)
        carry = b""
        while True:
            data = handle.read(READ_CHUNK_BYTES)
            if not data:
                return
            data = carry + data
            end = data.rfind(b"\n")
            if end < 0:
                carry = data
                continue
            carry = data[end + 1:]
            start = self.offset
            self.offset += end + 1
            yield start, data[:end].split(b"\n")
