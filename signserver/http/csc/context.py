"""What every CSC endpoint reaches: the facade and the worker's pools, shared with gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from signserver.admission import ConcurrencyLimit
from signserver.blocking_calls import BlockingCalls, FairShares
from signserver.http.csc.errors import new_fault_log
from signserver.http.csc.limits import (DOCUMENT_JOBS_PER_APPLICATION, OPERATIONS_PER_APPLICATION,
                                        OPERATIONS_PER_WORKER)
from signserver.monitoring.fault_log import FaultLog
from signserver.service import SignService


@dataclass(frozen=True)
class CscContext:
    """Held in the ASGI app's state (``app.state.csc``); one per worker process."""

    service: SignService
    hsm: BlockingCalls  # HSM work: signHash, time-stamps (the same pool gRPC's SignHash uses)
    accounts: BlockingCalls  # password checks: login, authorize
    documents: BlockingCalls  # PDF work: signDoc
    worker: int = 0  # which of the server's processes this is (named by info, as gRPC's ServerInfo does)
    # Asynchronous operations under way in this worker, per application (see limits.py).
    operations: ConcurrencyLimit = field(default_factory=lambda: ConcurrencyLimit(
        "asynchronous operations", OPERATIONS_PER_WORKER, OPERATIONS_PER_APPLICATION,
        next_step="poll them with signatures/signPolling, then try again"))
    # Each application's turn at the documents pool: one application's documents cannot take every thread.
    document_shares: FairShares = field(default_factory=lambda: FairShares(DOCUMENT_JOBS_PER_APPLICATION))
    # The worker's log of its own faults (throttled), for the requests' handlers and for the
    # asynchronous operations' work, which goes on after its request has been answered.
    faults: FaultLog = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", new_fault_log(self.service.clock))  # frozen: set once, here


def context_of(request: Request) -> CscContext:
    """The worker's context of a request."""
    return request.app.state.csc


async def csc_context(request: Request) -> CscContext:
    """:func:`context_of`, as a FastAPI dependency. A coroutine function on purpose: FastAPI runs
    a plain function dependency in a thread, a hand-over that cost a fifth of a single-hash
    signHash's time."""
    return context_of(request)
