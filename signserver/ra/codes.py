"""E-mail verification codes: 6 digits, valid code_seconds, a limited number of attempts each, and
for each address of a renewal a limited number of codes and of wrong codes in total (CodeLimits),
so guessing does not go on by asking for new codes. Only a salted hash of a code is kept; the code
itself exists in the e-mail alone (an unsent one is dropped once it has expired)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

from signserver.ra.errors import CodeRefused

CODE_DIGITS = 6


@dataclass(frozen=True)
class EmailVerification:
    id: int | None
    renewal_id: str
    address: str
    code_hash: bytes
    salt: bytes
    created_at: datetime.datetime
    expires_at: datetime.datetime
    attempts: int = 0
    verified_at: datetime.datetime | None = None


@dataclass(frozen=True)
class CodeLimits:
    """An address of a renewal: codes sent and wrong codes typed, in total, and when it was blocked
    for reaching a limit (an operator reopens it)."""
    codes_sent: int = 0
    failures: int = 0
    blocked_at: datetime.datetime | None = None

    @property
    def blocked(self) -> bool:
        return self.blocked_at is not None


def new_code() -> str:
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def _digest(code: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + code.encode("ascii", "replace")).digest()


def issue(renewal_id: str, address: str, now: datetime.datetime,
          lifetime_seconds: int) -> tuple[EmailVerification, str]:
    """A new verification of ``address`` and its code (to be e-mailed, never stored)."""
    code = new_code()
    salt = secrets.token_bytes(16)
    verification = EmailVerification(None, renewal_id, address, _digest(code, salt), salt, now,
                                     now + datetime.timedelta(seconds=lifetime_seconds))
    return verification, code


def attempt(verification: EmailVerification, code: str, now: datetime.datetime,
            max_attempts: int) -> tuple[EmailVerification, bool]:
    """Try ``code``; returns the verification to store (its attempt counted) and whether it matched.

    Raises: CodeRefused: the code has expired or its attempts are used up (ask for a new code).
    """
    if verification.verified_at is not None:
        return verification, True
    if now >= verification.expires_at:
        raise CodeRefused("the code has expired; ask for a new one", "expired")
    if verification.attempts >= max_attempts:
        raise CodeRefused("too many wrong codes; ask for a new one", "used_up")
    counted = replace(verification, attempts=verification.attempts + 1)
    if hmac.compare_digest(_digest(code.strip(), verification.salt), verification.code_hash):
        return replace(counted, verified_at=now), True
    return counted, False


def still_verified(verification: EmailVerification, now: datetime.datetime, reuse_days: int) -> bool:
    """An address verified for the same renewal in the last ``reuse_days`` is not asked again."""
    return (verification.verified_at is not None
            and now - verification.verified_at <= datetime.timedelta(days=reuse_days))
