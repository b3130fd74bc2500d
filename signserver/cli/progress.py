"""Progress of a long command on standard error: a line every few seconds, with its rate."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

PROGRESS_EVERY_SECONDS = 5.0


class ProgressLine:
    """Throttles a command's reports of progress to a line every PROGRESS_EVERY_SECONDS. The
    command reports as often as it likes; the rate is over the time since its first report (the
    command's own start, not the time spent before it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None):
        self._clock, self._stream = clock, stream
        self._began: float | None = None
        self._shown = 0.0

    def due(self) -> float | None:
        """The seconds since the first report when a line is due now (the caller then shows
        one), else None. The first call starts the clock."""
        now = self._clock()
        if self._began is None:
            self._began = self._shown = now
        if now - self._shown < PROGRESS_EVERY_SECONDS:
            return None
        self._shown = now
        return max(now - self._began, 1e-6)

    def show(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)
