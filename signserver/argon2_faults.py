"""What an argon2 error says of the process rather than of the secret: libargon2 found no memory
for its work area (a process near its RLIMIT_DATA bound) or could not start its threads.

Such a fault is neither a match nor a mismatch. Whoever checks a secret with argon2 refuses the
attempt as its own fault, in its own error hierarchy, and counts it toward no lock: taken for a
mismatch, it would refuse a right password and count it. argon2-cffi's exceptions carry only
libargon2's message for a result, so that message is what tells the faults apart.
"""

from __future__ import annotations

from argon2.low_level import error_to_str, lib

MEMORY = "memory"
THREADS = "threads"

_BY_RESULT = {lib.ARGON2_MEMORY_ALLOCATION_ERROR: MEMORY, lib.ARGON2_THREAD_FAIL: THREADS}
_BY_MESSAGE = {error_to_str(result): fault for result, fault in _BY_RESULT.items()}


def fault_of_result(result: int) -> str | None:
    """MEMORY or THREADS for a libargon2 result code that says the process lacked that; None for
    any other (parameters it refuses, success)."""
    return _BY_RESULT.get(result)


def fault_of(error: Exception) -> str | None:
    """:func:`fault_of_result` for an argon2-cffi error (HashingError, VerificationError)."""
    return _BY_MESSAGE.get(str(error))
