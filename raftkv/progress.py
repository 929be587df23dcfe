"""One line of progress on stderr for the commands that take a while (``raftkv cluster`` waiting for a leader,
``raftkv snapshot save``, ``raftkv restore``). On a terminal the line is rewritten in place as work goes on;
anywhere else (a pipe, a log file) only its last state is written, so a log gets one line, not hundreds."""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIB = 1 << 20


class ProgressLine:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.started = time.monotonic()
        self._width = 0  # of the line on screen, to blank what a shorter line leaves

    def update(self, text: str) -> None:
        """Show ``text`` (and the time so far) in place of the previous state; on a terminal only."""
        if self.live:
            self._write("\r" + self._line(text), end="")

    def finish(self, text: str) -> None:
        """End with ``text`` (and the time taken), on its own line wherever the output goes."""
        self._write(("\r" if self.live else "") + self._line(text), end="\n")
        self._width = 0

    def _line(self, text: str) -> str:
        line = f"{text} ({time.monotonic() - self.started:.1f} s)"
        padded, self._width = line.ljust(self._width), len(line)
        return padded

    def _write(self, text: str, end: str) -> None:
        print(text, end=end, file=self.stream, flush=True)


def mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"
