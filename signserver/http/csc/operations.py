"""The CSC API's asynchronous mode: a signature asked with ``operationMode: "A"`` is answered at
once with a ``responseID``; the work goes on in the worker that accepted it, on the same pools as
a synchronous call, and ``signatures/signPolling`` answers its outcome from the database, so a
poll reaching any worker answers, to the application that started it only.

An outcome is kept for a while (the caller's ``validity_period``, at most RESULT_SECONDS), then
erased. An operation still running at its deadline has failed: its worker stopped (or the work
hung), and no one else will finish it.

While an operation runs, a poll is answered as the CSC API v2 answers it (signatures/signPolling's
errors): HTTP 400 ``invalid_request``, "The previous asynchronous signature request has been
accepted for processing, but the processing has not yet been completed." (NOT_READY), which CSC
clients match to poll again; a ``Retry-After`` says when. 202, the HTTP convention, is not what CSC
clients expect there. An unknown responseID is 400 ``invalid_request`` too ("Invalid parameter
responseID"), as the CSC API answers it.

An application has at most OPERATIONS_PER_APPLICATION operations under way in a worker (and the
worker OPERATIONS_PER_WORKER in all, see limits.py); beyond, a start is refused at once with 429
and a Retry-After, before anything is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from sqlalchemy import insert, select, update
from starlette.responses import JSONResponse

from signserver import errors
from signserver.accounts.model import Application
from signserver.clock import Clock, epoch_seconds
from signserver.http.csc.context import CscContext
from signserver.http.csc.errors import GENERIC_SERVER_ERROR, UNEXPECTED, error_response, signserver_error_response
from signserver.monitoring.meter import meter
from signserver.store.database import Database
from signserver.store.schema import csc_operations


# Longer than any signing job takes (a large document at B-LTA): past it, a running operation
# has failed.
OPERATION_SECONDS = 300
RESULT_SECONDS = 600  # outcomes are kept at most this long, then erased
POLL_AGAIN_SECONDS = 1  # the Retry-After of a "not ready" answer

RUNNING, DONE, FAILED = "running", "done", "failed"
UNKNOWN = ("Invalid parameter responseID: no operation with this responseID was started by this "
           "application, or its outcome expired")
# The CSC API v2's own sentence (signatures/signPolling), which clients match.
NOT_READY = ("The previous asynchronous signature request has been accepted for processing, but the "
             "processing has not yet been completed.")
STOPPED = ("the operation did not finish: the server that ran it stopped or it took too long; "
           "sign again")

# The loop keeps weak references to tasks only: the operations under way in this worker.
_under_way: set[asyncio.Task] = set()


@dataclass(frozen=True)
class Outcome:
    """What a poll answers: the HTTP status and JSON body of the synchronous answer (the result,
    or the CSC error), or ``answer`` None while the operation runs (see not_ready)."""

    status_code: int
    answer: bytes | None

    @property
    def running(self) -> bool:
        return self.answer is None


class OperationStore:
    """The operations' rows (blocking database work: run it in a pool)."""

    def __init__(self, database: Database, clock: Clock):
        self._database = database
        self._clock = clock

    def start(self, application_id: int, keep_seconds: int) -> str:
        """Record a running operation and return its new responseID. Expired outcomes are refused
        when polled and removed in batches by the retention pass (signing/retention.py)."""
        response_id = secrets.token_urlsafe(32)
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            conn.execute(insert(csc_operations).values(
                id_hash=_hash(response_id), application_id=application_id, state=RUNNING, started_at=now,
                deadline=now + OPERATION_SECONDS, expires_at=now + OPERATION_SECONDS + keep_seconds,
                keep_seconds=keep_seconds))
        return response_id

    def finish(self, response_id: str, state: str, status_code: int, answer: bytes) -> None:
        """Record the outcome, kept for the operation's keep time from now."""
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            conn.execute(update(csc_operations)
                         .where(csc_operations.c.id_hash == _hash(response_id), csc_operations.c.state == RUNNING)
                         .values(state=state, status_code=status_code, answer=answer,
                                 expires_at=now + csc_operations.c.keep_seconds))

    def outcome(self, application_id: int, response_id: str) -> Outcome:
        """The operation's outcome for the application that started it.

        Raises: NotFound: unknown, another application's, or expired (all alike).
        """
        now = epoch_seconds(self._clock.now())
        with self._database.read() as conn:
            row = conn.execute(select(csc_operations).where(
                csc_operations.c.id_hash == _hash(response_id))).first()
        if row is None or row.application_id != application_id or row.expires_at <= now:
            raise errors.NotFound(UNKNOWN)
        if row.state != RUNNING:
            return Outcome(row.status_code, row.answer)
        if now < row.deadline:
            return Outcome(400, None)
        response = error_response(500, "server_error", STOPPED)
        return Outcome(response.status_code, response.body)


def _hash(response_id: str) -> str:
    # Rows name operations by a digest: the database alone never hands out a usable responseID.
    return hashlib.sha256(response_id.encode("utf-8")).hexdigest()


def keep_seconds(validity_period_ms: int | None) -> int:
    """How long an outcome is kept: the caller's validity_period (milliseconds), at most RESULT_SECONDS.

    Raises: InvalidArgument: not positive.
    """
    if validity_period_ms is None:
        return RESULT_SECONDS
    if validity_period_ms <= 0:
        raise errors.InvalidArgument("validity_period must be a positive number of milliseconds")
    return min(RESULT_SECONDS, -(-validity_period_ms // 1000))  # integers: any size is bounded, never overflows


def operation_store(context: CscContext) -> OperationStore:
    return OperationStore(context.service.database, context.service.clock)


async def start_operation(context: CscContext, application: Application,
                          run: Callable[[], Awaitable[dict[str, Any]]], keep: int = RESULT_SECONDS, *,
                          method: str) -> dict:
    """Record the operation, start ``run`` (the synchronous answer's work) in this worker and
    answer its responseID at once. ``method``: the call's label in the figures
    (:func:`~signserver.http.call_metrics.method_label`), under which a refusal its work ends
    with is counted once, when it ends (the start was answered, and counted, before).

    The operations' rows are read and written in the accounts pool, where the caller's
    authentication looks up its token too: a start or a poll answers while the HSM and documents
    pools are busy with the very work it asks about.

    Raises: ServerBusy: the application (or the worker) has as many operations under way as it
        may, or the accounts pool is full; StoreUnavailable (recording it).
    """
    store = operation_store(context)
    context.operations.take(application.id)  # given back by _carry_out
    try:
        response_id = await context.accounts.run(store.start, application.id, keep)
    except BaseException:
        context.operations.give_back(application.id)
        raise
    task = asyncio.get_running_loop().create_task(_carry_out(context, store, response_id, run, application.id,
                                                             method))
    _under_way.add(task)
    task.add_done_callback(_under_way.discard)
    return {"responseID": response_id}


async def _carry_out(context: CscContext, store: OperationStore, response_id: str,
                     run: Callable[[], Awaitable[dict[str, Any]]], application_id: int, method: str) -> None:
    """Run the operation and record its outcome as the synchronous call would have answered it,
    and count a refusal by its reason, as the synchronous call's would have been (once: polls
    only read it). The application's place is given back once the work ends, before the outcome
    is recorded: a client that polled the outcome may start another at once."""
    try:
        try:
            async with asyncio.timeout(OPERATION_SECONDS):
                answer = await run()
        finally:
            context.operations.give_back(application_id)
        state, status_code, body = DONE, 200, json.dumps(answer).encode("utf-8")
    except errors.SignServerError as error:
        response = signserver_error_response(error, context.faults)
        state, status_code, body = FAILED, response.status_code, response.body
        meter().refused_later("csc", method, error.reason)
    except TimeoutError:
        response = error_response(500, "server_error", STOPPED)
        state, status_code, body = FAILED, response.status_code, response.body
    except Exception:  # noqa: BLE001 - a fault of ours still ends the operation, as a 500
        # Throttled as a synchronous call's fault is: a client may start operations again and again.
        context.faults.record("asynchronous CSC operation failed unexpectedly", with_traceback=True)
        response = error_response(500, "server_error", GENERIC_SERVER_ERROR, UNEXPECTED)
        state, status_code, body = FAILED, response.status_code, response.body
        meter().refused_later("csc", method, UNEXPECTED.reason)
    try:
        await context.accounts.run(store.finish, response_id, state, status_code, body)
    except Exception:  # noqa: BLE001 - nobody awaits this task: its poll fails at the deadline
        context.faults.record("the outcome of an asynchronous CSC operation could not be recorded",
                              with_traceback=True)


async def poll_operation(context: CscContext, application: Application, response_id: str) -> Outcome:
    """The outcome of the application's operation (see OperationStore.outcome).

    Raises: NotFound, InvalidArgument (no responseID), ServerBusy, StoreUnavailable.
    """
    if not response_id or len(response_id) > 100:
        raise errors.InvalidArgument("responseID is missing or too long")
    return await context.accounts.run(operation_store(context).outcome, application.id, response_id)


def not_ready(response_id: str) -> JSONResponse:
    """The CSC answer to a poll of an operation still running (see the module's note)."""
    return error_response(400, "invalid_request", NOT_READY, headers={"Retry-After": str(POLL_AGAIN_SECONDS)},
                          responseID=response_id)
