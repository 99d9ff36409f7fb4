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

import glob
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from filelock import FileLock

log = logging.getLogger(__name__)

Selector = Callable[[Iterator[dict[str, Any]]], Iterable[dict[str, Any]]]
"""Given a log's records in order, yields the ones a rewrite keeps."""

READ_CHUNK_BYTES = 2 * 1024 * 1024
LINE_READ_BYTES = 16 * 1024
TAIL_BYTES = 63
HEAD_BYTES = 4096
SAMPLES, SAMPLE_BYTES = 16, 64


class StoreUnavailable(OSError):
    """The store could not be written (folder not writable, disk full...)."""


@dataclass
class Batch:
    """Lines read by one poll: ``reset`` means the file was replaced or truncated
    and ``records`` start again from the beginning of the new file."""

    reset: bool = False
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


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
            values = list(map(_loads_or_none, lines))
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


def encode_line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


LOCK_POLL_SECONDS = 0.0002
"""How long a waiter sleeps between tries of the store's lock.

filelock waits by polling: a non-blocking ``flock`` and a sleep between tries, so the
lock stands idle from its release until a waiter's next try. Holds are short (an append
takes tens of microseconds; the fsync comes after the release), so a short sleep wins
the appends back that a longer one would lose: ``make bench`` measures it against a bare
blocking ``flock``.
"""


def store_lock(path: str) -> FileLock:
    """The lock of one store for this process: filelock's ``flock`` on ``<store>.lock``.

    With ``thread_local`` each thread holds its own descriptor, so threads of one process
    exclude each other as processes do. The kernel drops the lock of a process that dies,
    so a lock file left behind never blocks anyone.
    """
    return FileLock(path, thread_local=True, poll_interval=LOCK_POLL_SECONDS)


class JsonlLog:
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._locks: dict[int, FileLock] = {}
        self._holders = threading.local()

    def _process_lock(self) -> FileLock:
        """This process's instance of the store's lock, made on first use.

        filelock refuses an instance made before a fork (gunicorn's master opens the stores,
        then forks its workers), so each process makes its own; all of them, like those of
        other processes, exclude each other through the kernel.
        """
        pid = os.getpid()
        lock = self._locks.get(pid)
        if lock is None:
            lock = store_lock(f"{self.path}.lock")
            self._locks = {pid: lock}
        return lock

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: for read-check-append sequences. Re-entrant per thread.

        Appends made while it is held are fsynced after it is released (before this
        returns), so processes appending at once share their disk flushes instead of
        queueing behind each other's.
        """
        depth = getattr(self._holders, "depth", 0)
        if depth == 0:
            lock = self._process_lock()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire()
            except OSError as exc:
                raise _unavailable("lock", self.path, exc) from exc
            self._holders.unsynced = []
        self._holders.depth = depth + 1
        try:
            yield
        finally:
            self._holders.depth = depth
            if depth == 0:
                lock.release()
                _sync_and_close(self._holders.unsynced, self.path)

    def holding(self) -> bool:
        """Whether this thread holds the store's lock."""
        return getattr(self._holders, "depth", 0) > 0

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records as lines under the lock; durable (fsynced) when this returns."""
        payload = b"".join(encode_line(record) for record in records)
        if not payload:
            return
        with self.locked():
            try:
                handle = open(self.path, "a+b", buffering=0)
            except OSError as exc:
                raise _unavailable("open", self.path, exc) from exc
            try:
                if _ends_torn(handle):
                    payload = b"\n" + payload
                start = handle.tell()
                try:
                    _write_all(handle, payload)
                except OSError:
                    handle.truncate(start)
                    raise
            except OSError as exc:
                handle.close()
                raise _unavailable("append to", self.path, exc) from exc
            if self.fsync:
                self._holders.unsynced.append(handle)
            else:
                handle.close()

    @property
    def carried_path(self) -> Path:
        return Path(f"{self.path}.carried.json")

    def carried(self, reader: LogReader | None = None) -> Any:
        """What the last :meth:`rewrite` carried over (None if nothing), as it applies to
        the store file ``reader`` follows (default: the file now at the path).

        The value is written with the identity of the file it belongs to and the value
        before it; a reader still on an older file, or a rewrite cut short between its
        two renames, gets that earlier value, so it always matches the records read.
        """
        try:
            companion = orjson.loads(self.carried_path.read_bytes())
            identity = reader.identity() if reader is not None else _identity(self.path)
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(companion, dict):
            return None
        return companion.get("value" if companion.get("store") == identity else "previous")

    def rewrite(
        self, keep: Selector, carry: Callable[[Any], Any] | None = None,
        before_replace: Callable[[Path], None] | None = None,
    ) -> int:
        """Replace the log by ``keep(records)``, atomically, under the lock.

        ``keep`` gets every parseable record in file order and yields those to keep. They
        go to a temporary file in the same folder, which is fsynced and renamed over the
        log; then the folder is fsynced so the rename itself is durable. Appends wait for
        the lock meanwhile, so none is lost; a failure leaves the log as it was, and
        temporary files of a rewrite killed halfway are removed by the next one. A last
        line without its newline is taken like any other (no append is under way while
        the lock is held). Returns how many lines were left out because they did not
        parse.

        With ``carry``, ``carry(previous)`` is called once ``keep`` has run, with what the
        last rewrite carried over, and its JSON value is kept beside the log (see
        :meth:`carried`): totals of what was dropped, for one. With ``before_replace``,
        it is called with the new file, whole and fsynced, just before it takes the log's
        place (to save the new file's checkpoint, so readers need not each read it).
        """
        unreadable = 0

        def records() -> Iterator[dict[str, Any]]:
            nonlocal unreadable
            for chunk in reader.poll_chunks():
                decoded = chunk.decode()
                unreadable += chunk.filled_lines() - len(decoded)
                yield from (record for _, record in decoded)
            last_line = reader.unfinished_line()
            if last_line.strip():
                record = _loads_or_none(last_line)
                if type(record) is dict:
                    yield record
                else:
                    unreadable += 1

        with self.locked():
            self._remove_leftovers()
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
                if carry is not None:
                    self._write_carried(_identity(Path(temporary)), carry)
                if before_replace is not None:
                    before_replace(Path(temporary))
                os.replace(temporary, self.path)
                temporary = None
                _fsync_folder(self.path.parent)
            except OSError as exc:
                raise _unavailable("rewrite", self.path, exc) from exc
            finally:
                reader.close()
                if temporary is not None:
                    _remove_quietly(temporary)
        return unreadable

    def _remove_leftovers(self) -> None:
        """Remove temporary files of rewrites that were killed before their rename (only
        a rewrite writes them, under the lock this one holds)."""
        for leftover in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            log.warning("removing %s, left by a compaction that did not finish", leftover)
            _remove_quietly(str(leftover))

    def _write_carried(self, store: list[int], carry: Callable[[Any], Any]) -> None:
        previous = self.carried()
        companion = {"store": store, "value": carry(previous), "previous": previous}
        temporary = self.carried_path.with_name(f".{self.carried_path.name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps(companion))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.carried_path)

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


def _unavailable(action: str, path: Path, exc: OSError) -> StoreUnavailable:
    return StoreUnavailable(f"cannot {action} {path}: {exc.strerror or exc}")


def _sync_and_close(handles: list[Any], path: Path) -> None:
    failure = None
    for handle in handles:
        try:
            os.fsync(handle.fileno())
        except OSError as exc:
            failure = exc
        finally:
            handle.close()
    if failure is not None:
        raise _unavailable("flush", path, failure) from failure


def _write_all(handle: Any, payload: bytes) -> None:
    """Write every byte through an unbuffered handle (a raw write may write part)."""
    view = memoryview(payload)
    while view:
        view = view[handle.write(view):]


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


def _identity(path: Path) -> list[int]:
    found = os.stat(path)
    return [found.st_dev, found.st_ino]


def _ends_torn(handle: Any) -> bool:
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    return handle.read(1) != b"\n"


def _fingerprint(fd: int, offset: int) -> str:
    """A hash of the file's first HEAD_BYTES and of SAMPLES short stretches spread over
    the rest, up to ``offset``: what tells a file from another one that took its inode."""
    digest = hashlib.blake2b(os.pread(fd, min(offset, HEAD_BYTES), 0), digest_size=16)
    if offset > HEAD_BYTES:
        for sample in range(SAMPLES):
            digest.update(os.pread(fd, SAMPLE_BYTES, HEAD_BYTES + (offset - HEAD_BYTES)
                                   * sample // SAMPLES))
    return digest.hexdigest()


def _loads_or_none(line: bytes) -> Any:
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
        value = _loads_or_none(b"".join(parts))
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
                "fingerprint": _fingerprint(self._handle.fileno(), self.offset)}

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
                or _fingerprint(fd, offset) != position.get("fingerprint")):
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

    def poll(self) -> Iterator[Batch]:
        """Everything appended since the last poll, as batches of complete parsed lines.

        The first batch has ``reset`` set when the file was replaced or truncated.
        """
        for chunk in self.poll_chunks():
            yield Batch(reset=chunk.reset, records=chunk.decode())

    def poll_chunks(self) -> Iterator[Chunk]:
        """Like :meth:`poll`, but the lines are left unparsed."""
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
