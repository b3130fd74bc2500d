"""RecentCredentials: the credentials a worker read and found usable lately, to spare a read.

On PostgreSQL a SignHash's writes are one call of ``spend_activation_token``, which checks that
the credential is still as the worker found it (active, the same key, the same newest certificate,
still valid and unexpired) before it spends anything. So an entry here only saves the round trip
of reading the credential: one that went stale (a revocation, a renewal, another node's change)
fails that check, and the worker reads the credential again. Nothing is ever refused for what
this holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

DEFAULT_SIZE = 10_000  # about a megabyte of rows per worker


class RecentCredentials:
    """At most ``size`` credential rows by id, the least recently used dropped first. Thread-safe."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self._size = size
        self._rows: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, credential_id: str):
        """The row kept for ``credential_id``, or None."""
        with self._lock:
            row = self._rows.get(credential_id)
            if row is not None:
                self._rows.move_to_end(credential_id)
            return row

    def keep(self, credential_id: str, row) -> None:
        with self._lock:
            self._rows[credential_id] = row
            self._rows.move_to_end(credential_id)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def forget(self, credential_id: str) -> None:
        with self._lock:
            self._rows.pop(credential_id, None)
