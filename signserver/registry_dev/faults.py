"""Fault switches of the reference registry: answer with an error status, or late, on purpose.

Tests turn them on (``POST /dev/faults`` or :meth:`FaultSwitch.set`) to play a registry that is
down, overloaded or slow, and off again to play it coming back. A fault applies to the contract's
endpoints (``/v1/...``) only, for ``times`` requests or until cleared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """What the next requests get: ``status`` (0: the normal answer) after ``delay_seconds``,
    for ``times`` requests (None: until cleared)."""

    status: int = 0
    delay_seconds: float = 0.0
    times: int | None = None

    def __post_init__(self) -> None:
        if self.status and not 400 <= self.status <= 599:
            raise ValueError("status must be 0 or an HTTP error status (400-599)")
        if not 0.0 <= self.delay_seconds <= 600.0:
            raise ValueError("delay_seconds must be between 0 and 600")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or absent: until cleared)")

    def as_json(self) -> dict[str, object]:
        return {"status": self.status, "delay_seconds": self.delay_seconds, "times": self.times}


NO_FAULT = Fault()


class FaultSwitch:
    """The fault in force, shared by the server's event loop and whoever sets it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault = NO_FAULT
        self._left: int | None = None

    def set(self, fault: Fault) -> None:
        """Put ``fault`` in force (replacing any other)."""
        with self._lock:
            self._fault, self._left = fault, fault.times

    def clear(self) -> None:
        """Answer normally again."""
        self.set(NO_FAULT)

    def current(self) -> Fault:
        """The fault in force, with ``times`` what is left of it."""
        with self._lock:
            return Fault(self._fault.status, self._fault.delay_seconds, self._left)

    def take(self) -> Fault:
        """The fault the request now arriving gets (counted against its ``times``)."""
        with self._lock:
            fault = self._fault
            if self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._fault, self._left = NO_FAULT, None
            return fault
