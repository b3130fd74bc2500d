"""Passwords, recovery codes and revocation phrases: rules, and argon2id hashing."""

from __future__ import annotations

import functools
import re
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from signserver.config import AccountsConfig
from signserver.errors import InvalidArgument

MIN_LENGTH = 8
MAX_LENGTH = 256
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand
_PHRASE = re.compile(r"^[A-Za-z0-9]{8,64}$")


class PasswordRejected(InvalidArgument):
    """The new password breaks a rule; the message says which."""


@functools.cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # 30,000 most common passwords

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_password_rules(password: str, username: str) -> None:
    """The documents' rules (at least 8 characters, a letter and a non-letter), plus: not the
    username, not a common password.

    Raises: PasswordRejected: with the rule that failed.
    """
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"a password has at most {MAX_LENGTH} characters")
    if not any(c.isalpha() for c in password):
        raise PasswordRejected("a password has at least one letter")
    if all(c.isalpha() for c in password):
        raise PasswordRejected("a password has at least one character that is not a letter")
    lowered = password.lower()
    if username and username.lower() in lowered:
        raise PasswordRejected("a password must not contain the account name")
    if lowered in _common_passwords():
        raise PasswordRejected("that password is among the most common ones; choose another")


def check_revocation_phrase(phrase: str) -> None:
    """Raises: InvalidArgument: not 8 to 64 letters and digits."""
    if not _PHRASE.match(phrase):
        raise InvalidArgument("a revocation phrase has 8 to 64 characters, letters and digits only")


def new_recovery_code() -> str:
    """25 characters in groups of five (about 125 bits), e.g. ``K7QWE-...``."""
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(25))
    return "-".join(raw[i:i + 5] for i in range(0, 25, 5))


def normalise_recovery_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


class SecretHasher:
    """argon2id with configurable parameters (OWASP's by default); hashes are self-describing,
    so old hashes keep verifying after a parameter change and are rehashed on next success."""

    def __init__(self, config: AccountsConfig):
        self._hasher = argon2.PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=argon2.Type.ID,
        )

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str) -> bool:
        """True when ``secret`` matches; False for a mismatch or an unreadable hash."""
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def burn(self, secret: str) -> None:
        """Spend the time of one verification on purpose (unknown account), so timing does not
        tell whether an account exists."""
        self.verify(self._dummy_hash, secret)

    @functools.cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash(secrets.token_hex(16))
