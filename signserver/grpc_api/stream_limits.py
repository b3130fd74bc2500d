"""Bounds on document work that a client can multiply: streams open at once, idle streams, and
verifications running at once, per worker and per application.

Each bound refuses at once (RESOURCE_EXHAUSTED, through ServerBusy) rather than queueing: a
stalled or flooding client then costs the worker a counter, not a spool file, a thread or a
descriptor, and the HSM and the database keep what they need for everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator, Hashable, Iterator, TypeVar

from signserver.admission import ConcurrencyLimit
from signserver.config import ServerConfig
from signserver.descriptors import DEFAULT_RESERVE, DescriptorReserve
from signserver.errors import InvalidArgument, ServerBusy

T = TypeVar("T")

# However steadily it trickles, an upload (a document of at most max_document_mb) ends within
# this: a client sending one byte every 29 s would otherwise hold its stream without end.
UPLOAD_SECONDS = 600.0


@dataclass(frozen=True)
class DocumentLimits:
    """How much document work one worker takes on at once.

    ``streams_*``: SignPdf, PrepareSignature and VerifyPdf streams open at once (each holds up to
    two spool files once data arrives). ``verifications_*``: verifications running at once, each
    in a child process of its own. ``document_jobs_per_application``: signing jobs of one
    application running at once in the documents thread pool (the others wait their turn, so one
    application cannot take every thread). ``descriptor_reserve``: new streams and spool files
    are refused while no more descriptors than this are free.
    """

    streams_per_worker: int = 64
    streams_per_application: int = 16
    idle_seconds: float = ServerConfig.stream_idle_seconds  # then a client has stalled or gone
    upload_seconds: float = UPLOAD_SECONDS
    verifications_per_worker: int = 2
    verifications_per_application: int = 1
    document_threads: int = 2
    document_jobs_per_application: int = 1
    descriptor_reserve: int = DEFAULT_RESERVE


class DocumentStreams:
    """Admission of document streams: the per-worker and per-application counts, and the
    descriptor reserve (counted only here, when a stream starts, never on the signing path)."""

    def __init__(self, limits: DocumentLimits, reserve: DescriptorReserve):
        self._streams = ConcurrencyLimit("document streams", limits.streams_per_worker,
                                         limits.streams_per_application)
        self._reserve = reserve
        self.idle_seconds = limits.idle_seconds
        self.upload_seconds = limits.upload_seconds

    @contextlib.contextmanager
    def admit(self, key: Hashable) -> Iterator[None]:
        """Raises: ServerBusy: too many streams, or too few descriptors left."""
        check_descriptors(self._reserve)
        with self._streams.admit(key):
            yield


def check_descriptors(reserve: DescriptorReserve) -> None:
    """Raises: ServerBusy: no more than the reserve of descriptors is free."""
    if not reserve.available():
        raise ServerBusy("the server is busy: it is short of file descriptors; try again in a few seconds")


async def within_time(messages: AsyncIterator[T], idle_seconds: float, total_seconds: float) -> AsyncIterator[T]:
    """``messages``, each of which must arrive within ``idle_seconds`` of the one before, and all
    within ``total_seconds`` of the start.

    Raises: InvalidArgument: nothing arrived for ``idle_seconds``, or the messages took longer
    than ``total_seconds`` in all.
    """
    iterator = aiter(messages)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_seconds
    while True:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(idle_seconds, max(left, 0.0))):
                message = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if left <= idle_seconds:
                raise InvalidArgument(f"the stream took longer than {total_seconds:g} s in all; it is closed. "
                                      "Send the document at a steady pace") from None
            raise InvalidArgument(f"nothing arrived on the stream for {idle_seconds:g} s; it is closed. "
                                  "Send the document without pauses") from None
        yield message
