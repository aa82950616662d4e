"""Progress of long work, for people: on a terminal one line that updates in place; anywhere
else (a log file, a pipe, CI) plain lines, at most one every few seconds, so nothing runs
together."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, stream: TextIO | None = None, *, every: float = 5.0, tty: bool | None = None
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every = every
        self._last = float("-inf")  # when a plain line was last written
        self._latest = ""  # the last update
        self._written = True  # whether the last update was written out whole

    def update(self, text: str) -> None:
        """Shows how far the work is (a terminal: in place; else: now and then)."""
        self._latest = text
        if self._tty:
            self._stream.write(f"\r{text:<72}")
        elif time.monotonic() - self._last >= self._every:
            self._stream.write(text + "\n")
            self._last = time.monotonic()
            self._written = True
        else:
            self._written = False
        self._stream.flush()

    def done(self, text: str | None = None) -> None:
        """Ends it with a last line: `text`, or else the last update (once)."""
        final = self._latest if text is None else text
        if self._tty:
            if final:
                self._stream.write(f"\r{final:<72}\n")
        elif final and not (text is None and self._written):
            self._stream.write(final + "\n")
        self._latest, self._written, self._last = "", True, float("-inf")
        self._stream.flush()
