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

DEFAULT_SIZE = 2_000  # about 1.4 MB per worker (715 bytes an entry, measured with tracemalloc)


class RecentCredentials:
    """At most ``size`` entries by credential id, the least recently used dropped first.
    Thread-safe (a worker's event loop and its pools' threads sign)."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self._size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, credential_id: str):
        """What was kept for ``credential_id``, or None."""
        with self._lock:
            entry = self._entries.get(credential_id)
            if entry is not None:
                self._entries.move_to_end(credential_id)
            return entry

    def keep(self, credential_id: str, entry) -> None:
        with self._lock:
            self._entries[credential_id] = entry
            self._entries.move_to_end(credential_id)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, credential_id: str) -> None:
        with self._lock:
            self._entries.pop(credential_id, None)
