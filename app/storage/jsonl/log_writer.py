"""Writing a JSONL store: how it sits on disk and its lock.

A store is an append-only JSONL file with a lock file beside it (``<name>.lock``).
Writers append whole lines under the lock and flush (and by default fsync) before they
return, so an acknowledged line is on disk. Readers never need the lock
(:mod:`app.storage.jsonl.log_reader`).

A crashed writer can leave a torn last line with no newline. The next append starts
with a newline, so the torn fragment becomes a line of its own (skipped as corrupt)
instead of swallowing the record written after it. An append that fails (disk full)
cuts the file back to where it began, so a failed write leaves nothing behind.

Compaction (:meth:`JsonlLog.rewrite`) writes the kept records to a new file and renames
it over the log, under the lock; readers notice the new inode and start over.
"""
from __future__ import annotations

import glob
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock

from app.storage.jsonl.log_reader import LogReader, file_identity, loads_or_none
from app.storage.stores import StoreUnavailable

log = logging.getLogger(__name__)

Selector = Callable[[Iterator[dict[str, Any]]], Iterable[dict[str, Any]]]
"""Given a log's records in order, yields the ones a rewrite keeps."""


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
            identity = reader.identity() if reader is not None else file_identity(self.path)
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
                record = loads_or_none(last_line)
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
                    self._write_carried(file_identity(Path(temporary)), carry)
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


def _ends_torn(handle: Any) -> bool:
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    return handle.read(1) != b"\n"
