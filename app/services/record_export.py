"""The raw metric records, filtered, as CSV or JSON Lines, produced a chunk at a time.

Records come from the store a chunk at a time (its ``record_batches`` when it has them,
else ``MetricsService.stored_records`` gathered into batches): the same valid,
first-per-task_id records the aggregates count, read in bounded chunks, so an export of
a large store never holds it in memory. A record's optional fields are absent from its
JSON line when unknown, and empty cells of its CSV row.

A chunk is filtered with numpy masks and written column by column, never record by
record: ``created_at`` for the whole chunk with numpy, numbers with orjson (JSON Lines,
as ``orjson.dumps`` of the record would; in CSV the same digits, as ``repr`` writes
them), texts as they are unless one of the chunk needs quoting or escaping (then value
by value, once per distinct value). The columns are then interleaved with the constant
text between them and joined. The bytes are the same as writing each record with
:mod:`csv` or ``orjson.dumps``, as the export did before (``plain_export`` in
tests/api/test_export.py checks it).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, Union

import numpy as np
import orjson

from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.services.metrics_service import MetricsService
from app.storage.metric_records import AMOUNTS, MICROS, MetricRecord, RecordBatch, to_micros

FIELDS = (*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS)
"""The CSV columns: every record's fields, then the optional ones."""
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CHUNK_BYTES = 64 * 1024
BATCH_ROWS = 10_000
"""Records per batch when a store gives records one by one."""
LABEL_FIELDS = ("prompt_variant", "skill_version", "executor")
"""The optional fields that hold text (the others hold numbers)."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula."""
NEEDS_QUOTES = re.compile('[,"\r\n]')
"""What :mod:`csv` (minimal quoting, ``\\r\\n`` rows) puts a cell in quotes for."""
STATUS_NAMES = ("failed", "completed")
UTC_OFFSET = "+00:00"

Part = Union[str, Sequence[str]]
"""A constant text, the same on every row, or a column: one text per row."""


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would take for a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def csv_cell(text: str) -> str:
    """A text as :mod:`csv` writes it, once :func:`spreadsheet_safe`."""
    text = spreadsheet_safe(text)
    if NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def json_inner(text: str) -> str:
    """A text as orjson writes it, without the quotes around it."""
    return orjson.dumps(text).decode()[1:-1]


def _texts(values: list[str], plain: Callable[[str], bool], cell: Callable[[str], str]
           ) -> Sequence[str]:
    """``cell`` of every value, computed once per distinct value, unless all of them
    are ``plain`` (the usual case: the values themselves)."""
    if plain("".join(values)):
        return values
    cells = {value: cell(value) for value in set(values)}
    return list(map(cells.__getitem__, values))


QUOTED_CHARACTERS = (",", '"', "\r")
FORMULA_AFTER_NEWLINE = tuple("\n" + start for start in FORMULA_STARTS if start != "\r")


def csv_texts(values: list[str]) -> Sequence[str]:
    """The CSV cells of texts: the texts themselves unless one needs quoting or the
    formula guard (found with substring searches over the texts joined by newlines)."""
    joined = "\n" + "\n".join(values)
    if not (joined.count("\n") != len(values)
            or any(mark in joined for mark in QUOTED_CHARACTERS)
            or any(mark in joined for mark in FORMULA_AFTER_NEWLINE)):
        return values
    cells = {value: csv_cell(value) for value in set(values)}
    return list(map(cells.__getitem__, values))


def _json_plain(joined: str) -> bool:
    """Whether orjson writes these texts as they are (a quick test: some non-printable
    characters it does not escape make it say no)."""
    return joined.isprintable() and '"' not in joined and "\\" not in joined


def json_texts(values: list[str]) -> Sequence[str]:
    """Texts as orjson writes them, without their quotes."""
    return _texts(values, _json_plain, json_inner)


def json_numbers(values: list[Any]) -> list[str]:
    """Numbers (or None) as orjson writes them."""
    return orjson.dumps(values)[1:-1].decode().split(",") if values else []


NULL_EMPTY = {"null": ""}


def csv_numbers(values: Sequence[float | None]) -> list[str]:
    """Floats as :mod:`csv` writes them (``repr``), None as an empty cell. orjson writes
    the same digits, in the same form from 1e-4 up to 1e16; the others get ``repr``."""
    texts = json_numbers(list(values))
    numbers = np.array(values, np.float64)  # None: NaN
    with np.errstate(invalid="ignore"):
        odd = np.flatnonzero(((numbers < 1e-4) & (numbers != 0)) | (numbers >= 1e16))
    for index in odd.tolist():
        texts[index] = repr(values[index])
    return list(map(NULL_EMPTY.get, texts, texts)) if None in values else texts


def timestamps(created_us: np.ndarray) -> list[str]:
    """``created_at`` of a chunk in UTC, without its offset, as ``isoformat`` writes it."""
    return np.datetime_as_string(created_us.astype("datetime64[us]"), unit="us").tolist()


def seconds(duration_us: np.ndarray) -> list[float]:
    """Durations in seconds, the same floats as ``duration_us / MICROS`` one by one."""
    return (duration_us / MICROS).tolist()


def statuses(completed: np.ndarray) -> list[str]:
    return list(map(STATUS_NAMES.__getitem__, completed.tolist()))


def csv_optional(name: str, values: list[Any]) -> list[str]:
    """The cells of an optional field: empty where unknown."""
    if name in LABEL_FIELDS:
        cells = {value: csv_cell(value) for value in set(values) if value is not None}
        cells[None] = ""
        return list(map(cells.__getitem__, values))
    if name in AMOUNTS:
        return csv_numbers(values)
    return ["" if value is None else str(value) for value in values]


def json_optional(name: str, values: list[Any]) -> list[str]:
    """The ``,"name":value`` of an optional field, or nothing where unknown."""
    key = f',"{name}":'
    if name in LABEL_FIELDS:
        cells = {value: key + orjson.dumps(value).decode()
                 for value in set(values) if value is not None}
        cells[None] = ""
        return list(map(cells.__getitem__, values))
    if name in AMOUNTS:
        return ["" if value is None else key + text
                for value, text in zip(values, json_numbers(values))]
    return ["" if value is None else f"{key}{value}" for value in values]


def csv_parts(batch: RecordBatch) -> list[Part]:
    parts: list[Part] = [
        csv_texts(batch.task_ids), ",", csv_texts(batch.task_types), ",",
        csv_texts(batch.models), ",", csv_numbers(seconds(batch.duration_us)), ",",
        statuses(batch.completed), ",", timestamps(batch.created_us), UTC_OFFSET,
    ]
    for name in OPTIONAL_RECORD_FIELDS:
        parts.append(",")
        if name in batch.optional:
            parts.append(csv_optional(name, batch.optional[name]))
    parts.append("\r\n")
    return parts


def jsonl_parts(batch: RecordBatch) -> list[Part]:
    parts: list[Part] = [
        '{"task_id":"', json_texts(batch.task_ids), '","task_type":"',
        json_texts(batch.task_types), '","model":"', json_texts(batch.models),
        '","duration_seconds":', json_numbers(seconds(batch.duration_us)), ',"status":"',
        statuses(batch.completed), '"',
    ]
    for name in OPTIONAL_RECORD_FIELDS:
        if name in batch.optional:
            parts.append(json_optional(name, batch.optional[name]))
    parts += [',"created_at":"', timestamps(batch.created_us), UTC_OFFSET + '"}\n']
    return parts


def interleaved(parts: list[Part], rows: int) -> tuple[list[str], int]:
    """The texts of ``rows`` rows in order (each row: its text of every part, constants
    next to each other merged), and how many texts a row has."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    width = len(merged)
    texts: list[str] = [""] * (rows * width)
    for position, part in enumerate(merged):
        texts[position::width] = [part] * rows if isinstance(part, str) else part
    return texts, width


def encoded(parts: list[Part], rows: int) -> Iterator[bytes]:
    """The rows' bytes, in pieces of whole rows of about ``CHUNK_BYTES``."""
    if not rows:
        return
    texts, width = interleaved(parts, rows)
    sample = min(rows, 64)
    row_bytes = max(1, len("".join(texts[: sample * width]).encode()) // sample)
    step = max(1, CHUNK_BYTES // row_bytes) * width
    for start in range(0, len(texts), step):
        yield "".join(texts[start: start + step]).encode()


PARTS = {"csv": csv_parts, "jsonl": jsonl_parts}
HEADERS = {"csv": (",".join(FIELDS) + "\r\n").encode(), "jsonl": b""}


def matching_batch(
    batch: RecordBatch,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    task_type: str | None = None,
    model: str | None = None,
    status: str | None = None,
) -> RecordBatch:
    """The records of a batch created in [since, until) with the given labels (None
    matches all)."""
    masks = []
    if since is not None:
        masks.append(batch.created_us >= to_micros(since))
    if until is not None:
        masks.append(batch.created_us < to_micros(until))
    for wanted, labels in ((task_type, batch.task_types), (model, batch.models)):
        if wanted is not None:
            masks.append(np.fromiter(map(wanted.__eq__, labels), bool, len(labels)))
    if status is not None:
        masks.append(batch.completed == (status == "completed"))
    if not masks:
        return batch
    keep = np.logical_and.reduce(masks)
    return batch if keep.all() else batch.select(keep)


def batch_of(records: Sequence[MetricRecord]) -> RecordBatch:
    """Records as the columns of one batch."""
    optional = {name: [record.optional.get(name) for record in records]
                for name in OPTIONAL_RECORD_FIELDS}
    return RecordBatch(
        np.zeros(len(records), np.int64),
        [record.task_id for record in records],
        [record.task_type for record in records],
        [record.model for record in records],
        np.array([record.completed for record in records], dtype=bool),
        np.array([record.duration_us for record in records], dtype=np.int64),
        np.array([record.created_us for record in records], dtype=np.int64),
        {name: values for name, values in optional.items()
         if values.count(None) < len(values)},
    )


def batched(records: Iterable[MetricRecord]) -> Iterator[RecordBatch]:
    iterator = iter(records)
    while rows := list(islice(iterator, BATCH_ROWS)):
        yield batch_of(rows)


def record_batches(metrics: MetricsService) -> Iterator[RecordBatch]:
    """The stored records in store order, a batch at a time: the store's own batches
    when it reads them so, else its records gathered into batches."""
    own: Callable[[], Iterator[RecordBatch]] | None = getattr(
        metrics.store, "record_batches", None)
    return own() if own is not None else batched(metrics.stored_records())


def rechunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Pieces joined into chunks of at least ``CHUNK_BYTES`` (but the last)."""
    chunk: list[bytes] = []
    size = 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    yield b"".join(chunk)


def export(metrics: MetricsService, file_format: str, **filters: Any) -> Iterator[bytes]:
    """The matching records in store order, encoded, in chunks of about ``CHUNK_BYTES``."""
    parts_of = PARTS[file_format]

    def pieces() -> Iterator[bytes]:
        yield HEADERS[file_format]
        for batch in record_batches(metrics):
            chosen = matching_batch(batch, **filters)
            yield from encoded(parts_of(chosen), len(chosen))

    return rechunked(pieces())
