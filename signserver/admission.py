"""A bound on what runs at once in one worker, in total and per key (an application), shared by
the fronts: gRPC's document streams and verifications, the CSC API's asynchronous operations."""

from __future__ import annotations

import contextlib
from typing import Hashable, Iterator

from signserver.errors import ServerBusy


class ConcurrencyLimit:
    """Counts what is under way, in total and per key, and refuses beyond a bound.

    Only touched from the event loop's thread, so plain counters suffice. ``next_step`` ends the
    refusal a key gets when it holds as many as it may (what its caller does next).
    """

    def __init__(self, what: str, total: int, per_key: int,
                 next_step: str = "wait for one to finish, then try again"):
        self._what = what
        self._total = total
        self._per_key = per_key
        self._next_step = next_step
        self._running = 0
        self._by_key: dict[Hashable, int] = {}

    def take(self, key: Hashable) -> None:
        """Hold one place for ``key``; :meth:`give_back` it when the work ends.

        Raises: ServerBusy: the worker or this key already has as many as it takes.
        """
        if self._running >= self._total:
            raise ServerBusy(f"the server is busy: {self._total} {self._what} are under way on this worker; "
                             "try again in a few seconds")
        held = self._by_key.get(key, 0)
        if held >= self._per_key:
            raise ServerBusy(f"this application has as many {self._what} under way as it may have at once "
                             f"({held}); {self._next_step}")
        self._running += 1
        self._by_key[key] = held + 1

    def give_back(self, key: Hashable) -> None:
        """The place :meth:`take` held for ``key`` is free again."""
        self._running -= 1
        left = self._by_key[key] - 1
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]

    @contextlib.contextmanager
    def admit(self, key: Hashable) -> Iterator[None]:
        """Hold one place for ``key`` while the block runs. Raises: as :meth:`take`."""
        self.take(key)
        try:
            yield
        finally:
            self.give_back(key)
