"""Derived state saved beside a store, so a process starts without reading its history.

A checkpoint (``<store>.checkpoint``) holds named numpy arrays and a JSON header with the
:meth:`~app.storage.jsonl.log_reader.LogReader.position` it was taken at: the store file's
device and inode, the offset read up to, the bytes just before that offset and a hash of
the file's first 4 KiB and of 16 stretches spread over the rest. A process that loads it
resumes reading at that offset, after checking that the file at the path is still that
file with those bytes, so it reads only what was appended since.

It is disposable: written to a temporary file, fsynced and renamed into place, with a
CRC-32 of the whole. One that is missing, torn, corrupt, of another kind or format, or
that describes another file (a compaction replaced the store) or other bytes (it was
truncated or rewritten) is ignored, and the store is read from the start; the next
checkpoint replaces it. A store edited in place away from the bytes checked is not
noticed, as a running reader does not notice it either.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.storage.jsonl.log_reader import Chunk, LogReader
from app.storage.jsonl.log_writer import JsonlLog

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 16 * 1024 * 1024
"""A store's checkpoint is written again once this many bytes were read past it."""

MAGIC = b"AGENTCKP"
FORMAT = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, format, header length
_CRC = struct.Struct("<I")


@dataclass
class Checkpoint:
    kind: str
    """What derived state it holds, with that state's own version (``"tasks/1"``)."""
    position: dict[str, Any]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def checkpoint_path(store: Path) -> Path:
    return Path(f"{store}.checkpoint")


def save(store: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint of ``store`` (atomically; a failure is logged, not raised:
    a checkpoint only saves time)."""
    specs, offset = [], 0
    for name, values in checkpoint.arrays.items():
        values = np.ascontiguousarray(values)
        specs.append({"name": name, "dtype": values.dtype.str, "length": len(values),
                      "offset": offset})
        offset += values.nbytes
    header = orjson.dumps({"kind": checkpoint.kind, "position": checkpoint.position,
                           "meta": checkpoint.meta, "arrays": specs})
    path = checkpoint_path(store)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.partial")  # not a compaction's
    try:
        with open(temporary, "wb") as handle:
            crc = _write(handle, _PREFIX.pack(MAGIC, FORMAT, len(header)) + header, 0)
            for values in checkpoint.arrays.values():
                crc = _write(handle, np.ascontiguousarray(values).tobytes(), crc)
            handle.write(_CRC.pack(crc))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("could not write the checkpoint %s: %s", path, exc)
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _write(handle: Any, data: bytes, crc: int) -> int:
    handle.write(data)
    return zlib.crc32(data, crc)


def load(store: Path, kind: str) -> Checkpoint | None:
    """The checkpoint of ``store`` if one of this kind is there whole; None otherwise.
    Whether it still describes the store is for the reader to check."""
    path = checkpoint_path(store)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        checkpoint = _decode(data)
    except (ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
        log.warning("ignoring the checkpoint %s: %s", path, exc)
        return None
    if checkpoint.kind != kind:
        log.info("ignoring the checkpoint %s: it holds %s, not %s", path, checkpoint.kind, kind)
        return None
    return checkpoint


def _decode(data: bytes) -> Checkpoint:
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != FORMAT:
        raise ValueError(f"not a checkpoint of format {FORMAT}")
    if len(data) < _PREFIX.size + header_length + _CRC.size:
        raise ValueError("cut short")
    body, (crc,) = memoryview(data)[:-_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise ValueError("its checksum does not match")
    header = orjson.loads(body[_PREFIX.size:_PREFIX.size + header_length])
    start = _PREFIX.size + header_length
    arrays = {}
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        end = start + spec["offset"] + dtype.itemsize * spec["length"]
        if end > len(body):
            raise ValueError("an array runs past the end")
        arrays[spec["name"]] = np.frombuffer(body, dtype, spec["length"], start + spec["offset"])
    return Checkpoint(header["kind"], header["position"], arrays, header["meta"])


class Checkpoints:
    """The checkpoints of one store, for the process that follows it with a reader.

    ``every_bytes``: how many bytes read past the last checkpoint call for a new one
    (None: never write one; they are still read).
    """

    def __init__(self, store: Path, kind: str, every_bytes: int | None = CHECKPOINT_BYTES):
        self.store, self.kind, self.every_bytes = store, kind, every_bytes
        self.saved_at = 0
        """The offset the last checkpoint loaded or saved for the file read covers."""

    def poll(
        self, reader: LogReader, restore: Callable[[Checkpoint], None],
        start_over: Callable[[], None],
    ) -> Iterator[Chunk]:
        """The reader's new chunks. Before the first read, and whenever the file was
        replaced (``start_over`` is called then, and the chunks' ``reset`` can be
        ignored), a checkpoint that describes the file is restored first and only what
        follows it is read."""
        if reader.identity() is None:
            self.saved_at = 0
            self._resume(reader, restore, start_over)
        while True:
            for chunk in reader.poll_chunks():
                if chunk.reset:
                    start_over()
                    self.saved_at = 0
                    if self._resume(reader, restore, start_over):
                        break
                yield chunk
            else:
                return

    def _resume(self, reader: LogReader, restore: Callable[[Checkpoint], None],
                start_over: Callable[[], None]) -> bool:
        checkpoint = load(self.store, self.kind)
        if checkpoint is None:
            return False
        try:
            restore(checkpoint)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("ignoring the checkpoint of %s: %s", self.store, exc)
            start_over()
            return False
        if not reader.resume(checkpoint.position):
            log.info("ignoring the checkpoint of %s: it describes another file or other "
                     "bytes", self.store)
            start_over()
            return False
        self.saved_at = reader.offset
        return True

    def save_if_due(self, reader: LogReader, take: Callable[[], Checkpoint]) -> None:
        """Save ``take()`` if enough was read since the last checkpoint."""
        if self.every_bytes is None or reader.offset - self.saved_at < max(self.every_bytes, 1):
            return
        saved_at = save_covering(self.store, reader, take())
        if saved_at is not None:
            self.saved_at = saved_at


def save_covering(store: Path, reader: LogReader, checkpoint: Checkpoint) -> int | None:
    """Save ``checkpoint`` as the checkpoint of ``store`` covering what ``reader`` has
    read. Returns the offset it covers; None, saving nothing, if the reader has no file."""
    position = reader.position()
    if position is None:
        return None
    checkpoint.position = position
    save(store, checkpoint)
    return int(position["offset"])


class CheckpointedStore(ABC):
    """What the JSONL stores share about checkpoints: a store follows ``log`` with
    ``_reader``, under ``_guard``, taking in what was appended on each ``refresh``."""

    log: JsonlLog
    _reader: LogReader
    _guard: threading.RLock
    _checkpoints: Checkpoints

    @abstractmethod
    def refresh(self) -> None:
        """Take in what was appended since the last read."""

    @abstractmethod
    def _checkpoint(self) -> Checkpoint:
        """What was read, as a checkpoint (its position is filled in when it is saved)."""

    @abstractmethod
    def _follower(self, path: Path) -> CheckpointedStore:
        """A store of the same kind on ``path`` that never writes checkpoints."""

    def close(self) -> None:
        with self._guard:
            self._reader.close()

    def _save_replacement_checkpoint(self, replacement: Path) -> None:
        """Save a compaction's new file's checkpoint before the file takes the store's
        place: the processes that notice the new file restore that instead of each
        reading the file whole. None is saved by a store that writes no checkpoints; a
        file that cannot be read back is logged, and the compaction goes on without."""
        if self._checkpoints.every_bytes is None:
            return
        follower = self._follower(replacement)
        try:
            follower.refresh()
            save_covering(self.log.path, follower._reader, follower._checkpoint())
        except OSError as exc:
            log.warning("no checkpoint of the compacted %s: %s", self.log.path, exc)
        finally:
            follower.close()
