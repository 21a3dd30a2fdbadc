"""Incremental Server-Sent-Events parser (WHATWG HTML, "Parsing an event stream"). Pure Python.

Bytes go in as they arrive from the network, cut anywhere; complete events come out::

    parser = SSEParser()
    for chunk in chunks:
        for event in parser.feed(chunk):
            ...
    clean = parser.close()   # False: the stream ended in the middle of an event (or before a terminal event)

What it handles, per the spec:

* UTF-8 decoded incrementally (a multi-byte character split across chunks is decoded once, whole; invalid bytes
  become U+FFFD); a leading BOM is dropped.
* Line ends LF, CR and CRLF; a CRLF whose CR ends one chunk and whose LF starts the next is one line end.
  (Not `str.splitlines()`, which also splits on U+2028, \\x1c and friends.)
* `:` comment lines are ignored; unknown fields are ignored; a line without a colon is a field with an empty value.
* Exactly one space after the colon is stripped; several `data` lines are joined with "\\n".
* `event` sets the type (default "message"); `id` sets the last event id, which persists across events (an id
  containing NUL is ignored); `retry` with only digits is kept in `retry`.
* A blank line dispatches the event; an event with no data is not dispatched.
* At the end of the stream an unfinished event is discarded and the stream is reported as truncated.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Event", "SSEParser"]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: `type` ("message" unless an `event:` field said otherwise), `data`, last event `id`."""

    type: str
    data: str
    id: str | None = None


class SSEParser:
    """Turns a byte stream into `Event`s. One parser per stream; it keeps only the unfinished line and event.

    `terminal`, if given, says which events end the stream properly (e.g. our `done` / `error` / `interrupted`);
    `close()` then also reports a stream that stopped after complete events but before a terminal one.
    """

    def __init__(self, terminal: Callable[[Event], bool] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._terminal = terminal
        self._line_parts: list[str] = []  # the current, unfinished line
        self._skip_lf = False  # the previous chunk ended with CR: a LF starting the next one belongs to it
        self._started = False  # BOM check done
        self._data: list[str] = []
        self._has_data = False
        self._type = ""
        self._last_id: str | None = None
        self._in_event = False  # some field line seen since the last blank line
        self.retry: int | None = None
        self.terminated = False  # a terminal event was dispatched
        self.closed = False
        self.clean: bool | None = None  # set by close()

    @property
    def last_event_id(self) -> str | None:
        return self._last_id

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Event]:
        """Decode and parse one chunk; return the events it completed (often none, sometimes several)."""
        return self.feed_text(self._decoder.decode(bytes(chunk)))

    def feed_text(self, text: str) -> list[Event]:
        """Parse already-decoded text (use either `feed` or `feed_text` for a stream, not both)."""
        if self.closed:
            raise ValueError("feed after close()")
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        if not text:
            return []
        pieces = _LINE_END.split(text)
        if len(pieces) == 1:  # no line end in this chunk: keep collecting
            self._line_parts.append(text)
            return []
        events: list[Event] = []
        self._line_parts.append(pieces[0])
        first = "".join(self._line_parts)
        self._line_parts = []
        self._line(first, events)
        for line in pieces[1:-1]:
            self._line(line, events)
        if pieces[-1]:
            self._line_parts.append(pieces[-1])
        self._skip_lf = text.endswith("\r")
        return events

    def close(self) -> bool:
        """End of stream. Return True when it ended cleanly: no half-received event and, when a `terminal`
        predicate was given, a terminal event was seen. The unfinished event, if any, is discarded (per spec)."""
        if self.closed:
            return bool(self.clean)
        self.closed = True
        tail = self._decoder.decode(b"", final=True)
        partial = bool(tail) or bool(self._line_parts) or self._in_event
        self._line_parts = []
        self._data = []
        self._has_data = False
        self.clean = not partial and (self._terminal is None or self.terminated)
        return self.clean

    @property
    def truncated(self) -> bool:
        """After close(): True if the stream did not end cleanly."""
        return self.closed and not self.clean

    def _line(self, line: str, events: list[Event]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return  # comment (e.g. `: ping` heartbeats)
        self._in_event = True
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\x00" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        # any other field is ignored

    def _dispatch(self, events: list[Event]) -> None:
        self._in_event = False
        if not self._has_data:
            self._type = ""
            return
        event = Event(self._type or "message", "\n".join(self._data), self._last_id)
        self._data = []
        self._has_data = False
        self._type = ""
        if self._terminal is not None and self._terminal(event):
            self.terminated = True
        events.append(event)
