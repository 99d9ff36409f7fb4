"""Checking and converting the fields of many stored task lines at once.

A cold start takes in millions of lines; checking each line's fields one by one in
Python (``is_task_change``, a ``parse_iso`` per time) cost most of that read. Here the
lines of a batch are grouped by their keys (lines the service writes come in a few
shapes) and each field is checked for a whole group in one go: codes of statuses and
task types looked up with ``map``, times in the form the service writes them
(``2026-01-02T03:04:05.123456+00:00``) parsed in numpy, any other value checked as
:mod:`app.storage.jsonl.task_rows` checks it. The answers are the same as line by line:
a value the quick checks are not sure of is checked the slow way.
"""
from __future__ import annotations

import operator
from itertools import compress, repeat
from typing import Any

import numpy as np

from app.clock import parse_iso
from app.storage.metric_records import to_micros

STAMP = "2026-01-02T03:04:05.123456+00:00"
"""The shape of a time as the service writes it; others are parsed by ``parse_iso``."""
STAMP_LENGTH = len(STAMP)
_DIGITS = np.array([i for i, char in enumerate(STAMP) if char.isdigit() and i < 26])
_SEPARATORS = {i: ord(char) for i, char in enumerate(STAMP) if not char.isdigit() or i >= 26}
MAX_SHAPES = 64
"""More kinds of lines than this in one batch (lines written by hand): not scanned."""


class Unsure(Exception):
    """The batch holds something the scan does not answer for (the caller takes it in
    line by line instead)."""


def times_us(values: list[Any], nullable: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which values are times (or None, when ``nullable``), and each time in
    microseconds since the epoch (0 for None and for what is not a time)."""
    count = len(values)
    ok = np.zeros(count, bool)
    micros = np.zeros(count, np.int64)
    is_text = np.fromiter(map(isinstance, values, repeat(str)), bool, count)
    if nullable:
        ok |= np.fromiter(map(operator.is_, values, repeat(None)), bool, count)
    texts = list(compress(values, is_text))
    at = np.flatnonzero(is_text)
    if texts:
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        fixed = lengths == STAMP_LENGTH
        joined = "".join(compress(texts, fixed))
        quick = np.zeros(len(texts), bool)
        if joined and joined.isascii():
            good, found = _stamps_us(joined.encode("ascii"))
            quick[np.flatnonzero(fixed)[good]] = True
            ok[at[quick]] = True
            micros[at[quick]] = found[good]
        for i in np.flatnonzero(~quick).tolist():
            try:
                moment = parse_iso(texts[i])
            except ValueError:
                continue
            try:
                micros[at[i]] = to_micros(moment)
            except OverflowError:
                raise Unsure("a time out of range") from None
            ok[at[i]] = True
    return ok, micros


_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334],
                              np.int64)
_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _stamps_us(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """For times of :data:`STAMP`'s shape laid end to end: which are such times (in the
    ranges ``datetime`` takes), and each in microseconds."""
    chars = np.frombuffer(data, np.uint8).reshape(-1, STAMP_LENGTH)
    digits = chars[:, _DIGITS].astype(np.int64) - ord("0")
    good = ((digits >= 0) & (digits <= 9)).all(axis=1)
    for i, char in _SEPARATORS.items():
        good &= chars[:, i] == char
    d = digits
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    day = d[:, 6] * 10 + d[:, 7]
    hour, minute, second = d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11], \
        d[:, 12] * 10 + d[:, 13]
    fraction = (d[:, 14:20] * np.array([100000, 10000, 1000, 100, 10, 1])).sum(axis=1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    safe_month = np.where(month_ok, month, 1)
    days_in_month = _MONTH_DAYS[safe_month] - ((safe_month == 2) & ~leap)
    good &= (year >= 1) & month_ok & (day >= 1) & (day <= days_in_month) & (hour < 24) \
        & (minute < 60) & (second < 60)
    # days since 0001-01-01, then since the epoch
    before = year - 1
    days = (before * 365 + before // 4 - before // 100 + before // 400
            + _DAYS_BEFORE_MONTH[safe_month] + ((safe_month > 2) & leap) + day - 1) - 719162
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    return good, seconds * 1_000_000 + fraction


def codes_of(values: list[Any], codes: dict[str, int]) -> np.ndarray:
    """The code of each value that is a key of ``codes`` (strings), -1 for others."""
    try:
        return np.fromiter(map(codes.get, values, repeat(-1)), np.int64, len(values))
    except TypeError:  # an unhashable value
        return np.array([codes.get(value, -1) if isinstance(value, str) else -1
                         for value in values], np.int64)


def texts_ok(values: list[Any]) -> np.ndarray:
    """Which values are strings that are not empty."""
    count = len(values)
    is_text = np.fromiter(map(isinstance, values, repeat(str)), bool, count)
    lengths = np.fromiter((len(value) if text else 0 for value, text in
                           zip(values, is_text.tolist())), np.int64, count) \
        if not is_text.all() else np.fromiter(map(len, values), np.int64, count)
    return is_text & (lengths > 0)


def priorities(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Which values are ints of 32 bits (not bools), and the values (0 for others)."""
    count = len(values)
    exact = np.fromiter(map(operator.is_, map(type, values), repeat(int)), bool, count)
    numbers = np.zeros(count, np.int64)
    ints = list(compress(values, exact))
    try:
        numbers[exact] = np.array(ints, np.int64) if ints else 0
    except OverflowError:
        numbers[exact] = [value if -2**31 <= value < 2**31 else 2**31 for value in ints]
    ok = exact & (numbers >= -2**31) & (numbers < 2**31)
    return ok, np.where(ok, numbers, 0)


def dicts_ok(values: list[Any]) -> np.ndarray:
    return np.fromiter(map(isinstance, values, repeat(dict)), bool, len(values))


def shapes_of(lines: list[dict[str, Any]]) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The distinct key sequences of ``lines`` and which one each line has."""
    keys = list(map(tuple, lines))
    shapes = dict.fromkeys(keys)
    if len(shapes) > MAX_SHAPES:
        raise Unsure("too many kinds of lines")
    index = {shape: i for i, shape in enumerate(shapes)}
    return list(shapes), np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))


class ScannedLines:
    """What a batch of lines sets, field by field, each array with one entry per line.

    ``change_ok``: the line is a usable change (``is_task_change``); ``state_ok``: a
    usable whole state (``is_task_state``). Codes and numbers are -1 (codes), or come
    with a ``has_*`` array, where a line does not set the field; ``models`` is None there.
    """

    def __init__(self, count: int) -> None:
        self.change_ok = np.ones(count, bool)
        self.state_ok = np.zeros(count, bool)
        self.status = np.full(count, -1, np.int64)
        self.task_type = np.full(count, -1, np.int64)
        self.recorded = np.full(count, -1, np.int8)
        """0: ``recorded`` is false, 1: any other value."""
        self.models: list[Any] = [None] * count
        self.has_model = np.zeros(count, bool)
        self.numbers = {name: (np.zeros(count, bool), np.zeros(count, np.int64))
                        for name in ("priority", "run_after", "updated_at", "created_at")}
        self.lease = np.zeros(count, bool)
        """Lines that set ``status`` or a lease field (what a lease may follow)."""


def scan(lines: list[dict[str, Any]], status_codes: dict[str, int],
         type_codes: dict[str, int], required: tuple[str, ...],
         lease_fields: tuple[str, ...]) -> ScannedLines:
    """Check and convert the fields of ``lines`` (each has a text ``id``) as
    ``is_task_change``/``is_task_state`` and the row's columns would; raises
    :class:`Unsure` for batches it does not answer for."""
    shapes, shape_of = shapes_of(lines)
    scanned = ScannedLines(len(lines))
    for number, shape in enumerate(shapes):
        at = np.flatnonzero(shape_of == number)
        group = lines if len(at) == len(lines) else list(map(lines.__getitem__, at.tolist()))
        ok = np.ones(len(at), bool)
        for name in shape:
            if name == "id" or name not in _CHECKED:
                continue
            values = list(map(operator.itemgetter(name), group))
            if name in ("status", "task_type"):
                codes = codes_of(values, status_codes if name == "status" else type_codes)
                ok &= codes >= 0
                getattr(scanned, name)[at] = codes
            elif name in ("direction", "model"):
                ok &= texts_ok(values)
                if name == "model":
                    scanned.has_model[at] = True
                    for i, value in zip(at.tolist(), values):
                        scanned.models[i] = value
            elif name == "context":
                ok &= dicts_ok(values)
            elif name == "priority":
                good, numbers = priorities(values)
                ok &= good
                scanned.numbers[name][0][at] = True
                scanned.numbers[name][1][at] = numbers
            else:  # times
                nullable = name not in ("created_at", "updated_at")
                good, numbers = times_us(values, nullable)
                ok &= good
                if name in scanned.numbers:
                    scanned.numbers[name][0][at] = True
                    scanned.numbers[name][1][at] = numbers
        if "recorded" in shape:
            scanned.recorded[at] = [value is not False for value in
                                    map(operator.itemgetter("recorded"), group)]
        if any(name in shape for name in ("status", *lease_fields)):
            scanned.lease[at] = True
        scanned.change_ok[at] = ok
        if all(name in shape for name in required):
            scanned.state_ok[at] = ok
    return scanned


_CHECKED = ("status", "task_type", "direction", "model", "created_at", "updated_at",
            "started_at", "lease_expires_at", "run_after", "priority", "context")
