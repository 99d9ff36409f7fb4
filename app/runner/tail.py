"""The newest bytes of a stream, kept in bounded memory, and how to turn them into text."""
from __future__ import annotations


class Tail:
    """The newest ``limit`` bytes of a stream. Offsets count from the stream's start, so
    a reader can ask for what came after the point it has seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = 0
        """The offset of the oldest byte kept."""
        self._data = bytearray()

    @property
    def end(self) -> int:
        """How many bytes the stream has had."""
        return self.start + len(self._data)

    def append(self, data: bytes) -> None:
        self._data += data
        extra = len(self._data) - self.limit
        if extra > 0:
            del self._data[:extra]
            self.start += extra

    def since(self, offset: int = 0) -> bytes:
        """What is kept from ``offset`` on (all that is kept if it was cut before)."""
        return bytes(self._data[max(offset - self.start, 0):])


def text_within(data: bytes, limit: int) -> str:
    """The end of ``data`` as text of at most ``limit`` bytes in UTF-8.

    Bytes that are not UTF-8 become U+FFFD, which takes three bytes, so the text is cut
    again after decoding; a character cut in two at the front is dropped.
    """
    text = data[-limit:].decode("utf-8", "replace")
    encoded = text.encode()
    if len(encoded) > limit:
        text = encoded[-limit:].decode("utf-8", "ignore")
    return text


def complete_utf8(data: bytes) -> int:
    """The length of the longest prefix of ``data`` not ending inside a UTF-8 character,
    so that text sent while a stream is still read never splits one."""
    for back in range(1, min(len(data), 4) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # the lead byte of a sequence of 2, 3 or 4 bytes
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)
