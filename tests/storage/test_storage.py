"""The JSONL log: appends, reads from an offset, torn and corrupt lines, processes."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from app.storage.jsonl.log_writer import JsonlLog
from tests.support import jsonl, poll


def read_all(log: JsonlLog, reader=None) -> list[dict]:
    reader = reader or log.reader()
    return [record for batch in poll(reader) for _, record in batch.records]


def test_append_then_read_from_offset(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    reader = log.reader()
    assert read_all(log, reader) == []
    log.append([{"n": 1}, {"n": 2}])
    assert read_all(log, reader) == [{"n": 1}, {"n": 2}]
    log.append([{"n": 3}])
    assert read_all(log, reader) == [{"n": 3}]
    assert read_all(log, reader) == []


def test_unfinished_last_line_is_left_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = JsonlLog(path)
    reader = log.reader()
    path.write_bytes(b'{"n": 1}\n{"n": 2')
    assert read_all(log, reader) == [{"n": 1}]
    with open(path, "ab") as handle:
        handle.write(b"}\n")
    assert read_all(log, reader) == [{"n": 2}]


def test_torn_tail_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "cut')
    log = JsonlLog(path)
    log.append([{"n": 3}])
    assert read_all(log) == [{"n": 1}, {"n": 3}]


def test_corrupt_lines_are_skipped_and_logged(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n": 1}\nnot json\n[1, 2]\n\n{"n": 2}\n')
    assert read_all(JsonlLog(path)) == [{"n": 1}, {"n": 2}]
    assert "not json" in caplog.text


def test_replaced_or_truncated_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = JsonlLog(path)
    reader = log.reader()
    log.append([{"n": 1}, {"n": 2}])
    read_all(log, reader)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"n": 9}\n')
    os.replace(replacement, path)
    batches = list(poll(reader))
    assert batches[0].reset
    assert [r for b in batches for _, r in b.records] == [{"n": 9}]
    with open(path, "r+b") as handle:
        handle.truncate(0)
    batches = list(poll(reader))
    assert [b.reset for b in batches] == [True] and batches[0].records == []


def test_large_file_is_read_in_bounded_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("app.storage.jsonl.log_reader.READ_CHUNK_BYTES", 64)
    log = JsonlLog(tmp_path / "s.jsonl")
    log.append([{"n": n, "pad": "x" * (n % 50)} for n in range(300)])
    batches = list(poll(log.reader()))
    assert len(batches) > 10
    assert [r["n"] for b in batches for _, r in b.records] == list(range(300))


def test_offsets_point_at_their_lines(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    log.append([{"n": n} for n in range(5)])
    reader = log.reader()
    for batch in poll(reader):
        for offset, record in batch.records:
            assert reader.read_line_at(offset) == record


def _append_many(path: str, writer: int, count: int) -> None:
    log = JsonlLog(path, fsync=False)
    for n in range(count):
        log.append([{"writer": writer, "n": n, "pad": "y" * (n % 300)}])


def test_processes_appending_at_once_lose_and_double_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s.jsonl")
    writers, count = 6, 300
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(path, w, count))
                 for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    records = read_all(JsonlLog(path))
    assert len(records) == writers * count
    assert {(r["writer"], r["n"]) for r in records} == {
        (w, n) for w in range(writers) for n in range(count)
    }
    for writer in range(writers):
        assert [r["n"] for r in records if r["writer"] == writer] == list(range(count))


@pytest.mark.parametrize("filler", [20, 1000])  # past the last bytes read; past the head
@pytest.mark.parametrize("resumed", [False, True])
def test_a_rewrite_in_place_to_the_same_size_and_last_line_starts_over(
    tmp_path: Path, filler: int, resumed: bool
) -> None:
    """Neither the size nor the last bytes read tell this rewrite: the first bytes do."""
    path = tmp_path / "s.jsonl"
    log = JsonlLog(path)

    def content(first: str) -> bytes:
        lines = [{"s": first}, *({"n": n} for n in range(filler)), {"s": "last"}]
        return jsonl(lines)

    path.write_bytes(content("aaa"))
    reader = log.reader()
    assert len(read_all(log, reader)) == filler + 2
    if resumed:  # a reader that goes on from another's position, as from a checkpoint
        position, reader = reader.position(), log.reader()
        assert reader.resume(position) and read_all(log, reader) == []
    inode = path.stat().st_ino
    path.write_bytes(content("bbb"))
    assert path.stat().st_ino == inode
    batches = list(poll(reader))
    assert batches[0].reset
    assert [r for b in batches for _, r in b.records][0] == {"s": "bbb"}


def test_a_reader_resumed_on_another_file_goes_on_from_there(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = JsonlLog(path)
    path.write_bytes(jsonl({"old": n} for n in range(1000)))
    follower = log.reader()
    read_all(log, follower)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(jsonl({"new": n} for n in range(1000)))
    os.replace(replacement, path)
    reader = log.reader()
    read_all(log, reader)
    assert follower.resume(reader.position())
    assert list(poll(follower)) == []
    log.append([{"new": 1000}])
    assert read_all(log, follower) == [{"new": 1000}]


def test_a_closed_reader_goes_on_where_it_stopped_or_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = JsonlLog(path)
    reader = log.reader()
    log.append([{"n": 1}])
    assert read_all(log, reader) == [{"n": 1}]
    reader.close()
    log.append([{"n": 2}])
    assert read_all(log, reader) == [{"n": 2}]
    reader.close()
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"n": 9}\n')
    os.replace(replacement, path)
    batches = list(poll(reader))
    assert batches[0].reset and [r for b in batches for _, r in b.records] == [{"n": 9}]
    reader.close()
    path.write_bytes(b'{"n": 7}\n{"n": 8, "longer": "than what was read"}\n')
    batches = list(poll(reader))
    assert batches[0].reset
    assert [r["n"] for b in batches for _, r in b.records] == [7, 8]
