"""What the signDoc requests under way in one worker may hold of its memory.

FastAPI reads a request's whole body, and decodes it, before the endpoint runs: a signDoc body
(up to one largest document in base64) is then held until its answer is sent, or until the
asynchronous operation that keeps its documents ends, with what its signing makes (see
:func:`body_weight`). The bodies a worker
holds at once weigh against what its memory bound leaves once the worker's data at rest and the
headroom kept below the bound (as gRPC's streams keep it) are counted; one application holds at
most its share of that, the share of the documents pool's threads it may take turns in
(DOCUMENT_JOBS_PER_APPLICATION of them), so that the others still get a turn. Its first request
is weighed against the worker's budget alone: an application is never refused for its own size
while the worker has room.
"""

from __future__ import annotations

from typing import Hashable

from signserver.errors import MemoryExhausted
from signserver.http.csc.limits import DOCUMENT_JOBS_PER_APPLICATION
from signserver.memory_bound import (DOCUMENT_COPIES, MIB, data_bytes, headroom, memory_bound, near_bound,
                                     recheck_memory_later)


def body_weight(size: int) -> int:
    """What ``size`` bytes of a signDoc body cost the worker until its answer is sent: the body
    twice (its bytes and its decoded text), the answer twice (the signed documents' base64 text
    and the JSON bytes sent, about as large as the body), and the documents between them, decoded
    (3/4 of their base64), twice, as gRPC's bound keeps a document being signed (DOCUMENT_COPIES).
    Measured without the last term, a worker signing such bodies one after another came within
    10 MiB of its bound."""
    return DOCUMENT_COPIES * (2 * size + size * 3 // 4)


class BodyBudget:
    """The bytes signDoc requests under way may weigh in one worker (``total``) and for one
    application (``per_application``); None: no bound. Only touched from the event loop's
    thread, so plain counters suffice."""

    def __init__(self, total: int | None, per_application: int | None):
        self._total = total
        self._per_application = per_application
        self._held = 0
        self._by_key: dict[Hashable, int] = {}
        self._requests: dict[Hashable, int] = {}

    @classmethod
    def of_worker(cls, document_threads: int) -> "BodyBudget":
        """The budget of this process: its memory bound less its data now (the worker at rest)
        and the headroom; no bound without one. ``document_threads``: the documents pool's."""
        bound = memory_bound()
        if bound is None:
            return cls(None, None)
        total = max(bound - headroom(bound) - data_bytes(), 0)
        return cls(total, total * DOCUMENT_JOBS_PER_APPLICATION // max(document_threads, 1))

    def __str__(self) -> str:
        if self._total is None:
            return "no bound on the signDoc bodies held at once (the worker's memory is not bounded)"
        return (f"signDoc bodies held at once weigh at most {self._total // MIB} MiB, "
                f"{self._per_application // MIB} MiB for one application's second and later requests")

    @property
    def held(self) -> int:
        """The bytes the requests under way weigh now."""
        return self._held

    def reserve(self, key: Hashable, size: int = 0) -> "BodyReservation":
        """A new request of ``key`` (an application) with ``size`` bytes of body declared.

        Raises: MemoryExhausted: the worker is near its memory bound, or the body does not fit
            what the worker's (or the application's) requests leave now.
        """
        bound = memory_bound()
        if bound is not None and near_bound(bound):
            recheck_memory_later()  # a worker that keeps its data there is replaced
            raise MemoryExhausted(f"the server's worker is near its memory bound ({bound // MIB} MiB) with the work "
                                  "under way; this request is refused before its body is read: try again shortly")
        self._requests[key] = self._requests.get(key, 0) + 1
        reservation = BodyReservation(self, key)
        try:
            reservation.grow(size)
        except MemoryExhausted:
            reservation.release()
            raise
        return reservation

    def _take(self, key: Hashable, weight: int) -> None:
        """Raises: MemoryExhausted: ``weight`` more does not fit the worker's or ``key``'s share."""
        if self._total is not None:
            self._check(key, weight)
        self._held += weight
        self._by_key[key] = self._by_key.get(key, 0) + weight

    def _check(self, key: Hashable, weight: int) -> None:
        """Raises: MemoryExhausted: ``weight`` more does not fit the worker's or ``key``'s share."""
        if weight > self._total:
            raise MemoryExhausted(f"the request needs more memory than the server's worker keeps for documents "
                                  f"({self._total // MIB} MiB); it is refused: send fewer or smaller documents")
        elif self._held + weight > self._total:
            raise MemoryExhausted("the server's worker holds as many documents as its memory bound takes; this "
                                  "request is refused before its body is read: try again shortly")
        elif self._requests[key] > 1 and self._by_key.get(key, 0) + weight > self._per_application:
            raise MemoryExhausted("this application's requests under way hold its share of the worker's memory for "
                                  "documents; this one is refused before its body is read: try again once they end")

    def _give_back(self, key: Hashable, weight: int) -> None:
        """One request of ``key`` ended, holding ``weight``."""
        self._held -= weight
        self._by_key[key] = self._by_key.get(key, 0) - weight
        self._requests[key] -= 1
        if not self._requests[key]:
            del self._requests[key], self._by_key[key]


class BodyReservation:
    """What one request holds of a BodyBudget: grown as its body arrives, given back once."""

    def __init__(self, budget: BodyBudget, key: Hashable):
        self._budget = budget
        self._key = key
        self.weight = 0
        self.kept = False  # by an asynchronous operation, which releases it when it ends
        self._released = False

    def grow(self, size: int) -> None:
        """Weigh ``size`` more bytes of body. Raises: MemoryExhausted (see BodyBudget.reserve)."""
        weight = body_weight(size)
        if weight:
            self._budget._take(self._key, weight)
            self.weight += weight

    def keep(self) -> None:
        """The request's documents outlive its answer: :meth:`release` is left to their keeper."""
        self.kept = True

    def release(self) -> None:
        """Give the weight back (once; later calls do nothing)."""
        if not self._released:
            self._released = True
            self._budget._give_back(self._key, self.weight)
