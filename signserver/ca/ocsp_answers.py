"""OCSP answers signed lately, given again for a minute (RFC 5019's pre-produced responses).

An answer to a request without a nonce says the same thing to everyone who asks the same question
while the certificates' status stays as it is. Kept for REUSE_SECONDS and given again, it saves an
HSM signature per request (a flood of one question costs one a minute), and HTTP caches holding it
revalidate it with a 304 (its ETag and Last-Modified stay). The status is still read for every
request, and is part of what an answer is found by: a revocation is in the next answer, whatever
was signed before. A minute keeps thisUpdate close to the time of asking, as validators that want
revocation data from after a signature's time expect.

A client beyond its limit of new signatures (``http.ocsp_rate_per_second``) is given the kept
answer to its question even when it sent a nonce, which that answer does not carry (see
revocation.ocsp_response; the HTTP front says why).
"""

from __future__ import annotations

import collections
import datetime
import threading
from typing import Hashable

REUSE_SECONDS = 60
MOST_KEPT = 1000  # answers of a few kilobytes: a few megabytes at most per process


class OcspAnswers:
    """The answers this process signed in the last REUSE_SECONDS, by what they answer (the
    responder, each CertID and its status); the least recently used go beyond MOST_KEPT.
    Thread-safe."""

    def __init__(self, seconds: int = REUSE_SECONDS, most: int = MOST_KEPT):
        self._lifetime = datetime.timedelta(seconds=seconds)
        self._most = most
        self._kept: collections.OrderedDict[Hashable, tuple[bytes, datetime.datetime]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def find(self, question: Hashable, now: datetime.datetime) -> bytes | None:
        """The answer signed for ``question`` less than REUSE_SECONDS before ``now``, else None."""
        with self._lock:
            kept = self._kept.get(question)
            if kept is None:
                return None
            answer, signed_at = kept
            if not datetime.timedelta(0) <= now - signed_at < self._lifetime:
                del self._kept[question]
                return None
            self._kept.move_to_end(question)
            return answer

    def keep(self, question: Hashable, answer: bytes, signed_at: datetime.datetime) -> None:
        with self._lock:
            self._kept[question] = (answer, signed_at)
            self._kept.move_to_end(question)
            while len(self._kept) > self._most:
                self._kept.popitem(last=False)
