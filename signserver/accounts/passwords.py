"""Passwords, recovery codes and revocation phrases: rules, and argon2id hashing."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

import argon2
from argon2.exceptions import HashingError, InvalidHashError, VerificationError, VerifyMismatchError

from signserver.accounts.argon2_memory import argon2id_raw, resource_fault
from signserver.argon2_faults import fault_of
from signserver.config import AccountsConfig
from signserver.errors import InvalidArgument

MIN_LENGTH = 8
MAX_LENGTH = 256
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand
_PHRASE = re.compile(r"^[A-Za-z0-9]{8,64}$")


class PasswordRejected(InvalidArgument):
    """The new password breaks a rule; the message says which (for people) and ``rule`` names it
    (for programs, e.g. a page that words it in the reader's language): "too_short", "too_long",
    "no_letter", "no_non_letter", "contains_account", "common", "unchanged" (the current
    password again) or "confirmation_differs"."""

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


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
        raise PasswordRejected(f"a password has at least {MIN_LENGTH} characters", "too_short")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"a password has at most {MAX_LENGTH} characters", "too_long")
    if not any(c.isalpha() for c in password):
        raise PasswordRejected("a password has at least one letter", "no_letter")
    if all(c.isalpha() for c in password):
        raise PasswordRejected("a password has at least one character that is not a letter", "no_non_letter")
    lowered = password.lower()
    if username and username.lower() in lowered:
        raise PasswordRejected("a password must not contain the account name", "contains_account")
    if lowered in _common_passwords():
        raise PasswordRejected("that password is among the most common ones; choose another", "common")


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


_KDF_PREFIX = "$argon2id-kdf$v=19$"
_KDF_BYTES = 64  # the first half checks the secret, the second half is the key it yields
_TIMED_EVALUATIONS = 31  # how many evaluations at the current parameters the padding's length is the median of


@dataclass(frozen=True)
class Derivation:
    """What checking a secret yields: whether it matched and, for a hash made by
    :meth:`SecretHasher.hash_with_key`, the key derived from it (None for older hashes)."""

    matched: bool
    key: bytes | None = None


class SecretHasher:
    """argon2id with configurable parameters (OWASP's by default); hashes are self-describing,
    so old hashes keep verifying after a parameter change and are rehashed on next success.

    Secrets that protect a key (the password, the recovery code) are hashed with
    :meth:`hash_with_key`: one argon2id evaluation gives 64 bytes, of which the first half is
    stored to check the secret and the second half is the key, never stored. So checking the
    secret and deriving the key cost one evaluation, not two.

    A check against a hash of other (older) parameters takes at least as long as one at the
    current parameters, which is what an unknown name costs (:meth:`burn`): the time then left
    over (to the median of the latest evaluations at the current parameters) is spent working, so
    that the accounts not signed in to since a parameter change cannot be told from names nobody
    has (see :func:`_work_until`).

    An evaluation the process lacks the memory (or threads) for raises MemoryExhausted (ServerBusy),
    whichever method made it: it says nothing of the secret, so it must never count as a mismatch
    (a right password refused, and counted toward the lock). Only a malformed stored hash does not
    match for a reason other than the secret.
    """

    def __init__(self, config: AccountsConfig):
        self._time_cost = config.argon2_time_cost
        self._memory_kib = config.argon2_memory_kib
        self._parallelism = config.argon2_parallelism
        self._hasher = argon2.PasswordHasher(
            time_cost=self._time_cost,
            memory_cost=self._memory_kib,
            parallelism=self._parallelism,
            type=argon2.Type.ID,
        )
        parameters = f"m={self._memory_kib},t={self._time_cost},p={self._parallelism}$"
        self._current_kdf = _KDF_PREFIX + parameters
        self._current = (self._current_kdf, f"$argon2id$v=19${parameters}")  # either format, these parameters
        self._evaluations: deque[float] = deque(maxlen=_TIMED_EVALUATIONS)  # seconds, at the current parameters
        self._evaluations_lock = threading.Lock()

    def hash(self, secret: str) -> str:
        """Raises: MemoryExhausted, ServerBusy: no memory or threads for the evaluation."""
        try:
            return self._hasher.hash(secret)
        except HashingError as error:
            raise resource_fault(fault_of(error)) or error from None

    def hash_with_key(self, secret: str) -> tuple[str, bytes]:
        """A stored hash of ``secret`` and the 32-byte key derived with it.

        Raises: MemoryExhausted, ServerBusy: no memory or threads for the evaluation.
        """
        salt = secrets.token_bytes(16)
        raw = self._raw(secret, salt, self._time_cost, self._memory_kib, self._parallelism)
        stored = (f"{_KDF_PREFIX}m={self._memory_kib},t={self._time_cost},p={self._parallelism}"
                  f"${_b64(salt)}${_b64(raw[:32])}")
        return stored, raw[32:]

    def derive(self, stored_hash: str, secret: str) -> Derivation:
        """Check ``secret`` against ``stored_hash`` with one argon2id evaluation; a match of a
        hash made by :meth:`hash_with_key` yields its key. An unreadable hash does not match.
        Takes at least the time of an evaluation at the current parameters.

        Raises: MemoryExhausted, ServerBusy: no memory or threads for the evaluation (neither a
            match nor a mismatch: the caller must not count it).
        """
        began = time.perf_counter()
        derived = self._derive(stored_hash, secret)
        took = time.perf_counter() - began
        if stored_hash.startswith(self._current):
            with self._evaluations_lock:
                self._evaluations.append(took)
        else:
            _work_until(began + self._current_evaluation_seconds())
        return derived

    def _current_evaluation_seconds(self) -> float:
        """The median time of the latest evaluations at the current parameters (one is made, to
        time it, when none has been)."""
        with self._evaluations_lock:
            timed = list(self._evaluations)
        if not timed:
            began = time.perf_counter()
            self._raw(secrets.token_hex(16), secrets.token_bytes(16), self._time_cost, self._memory_kib,
                      self._parallelism)
            timed = [time.perf_counter() - began]
            with self._evaluations_lock:
                self._evaluations.append(timed[0])
        return statistics.median(timed)

    def _derive(self, stored_hash: str, secret: str) -> Derivation:
        if not stored_hash.startswith(_KDF_PREFIX):
            return Derivation(self._verify_plain(stored_hash, secret))
        try:
            parameters, salt, verifier = stored_hash[len(_KDF_PREFIX):].split("$")
            cost = dict(item.split("=") for item in parameters.split(","))
            raw = self._raw(secret, _unb64(salt), int(cost["t"]), int(cost["m"]), int(cost["p"]))
            expected = _unb64(verifier)
        except (ValueError, KeyError, binascii.Error, HashingError):  # a malformed hash (parameters libargon2 refuses)
            return Derivation(False)
        if hmac.compare_digest(raw[:32], expected):
            return Derivation(True, raw[32:])
        return Derivation(False)

    def verify(self, stored_hash: str, secret: str) -> bool:
        """True when ``secret`` matches; False for a mismatch or an unreadable hash. Takes as
        long as :meth:`derive`. Raises: as :meth:`derive`."""
        return self.derive(stored_hash, secret).matched

    def _verify_plain(self, stored_hash: str, secret: str) -> bool:
        """A hash made by :meth:`hash` (argon2's own format). Raises: MemoryExhausted, ServerBusy."""
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, InvalidHashError):
            return False
        except VerificationError as error:  # a malformed hash, unless libargon2 lacked memory or threads
            fault = resource_fault(fault_of(error))
            if fault is not None:
                raise fault from None
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True for a hash made with other parameters, or one that yields no key."""
        return not stored_hash.startswith(self._current_kdf)

    def burn(self, secret: str) -> None:
        """Spend the time of one verification on purpose (unknown account), so timing does not
        tell whether an account exists. Raises: as :meth:`derive` (the stand-in hash is made on
        first use: its evaluation may fault the same way)."""
        self.derive(self._dummy_hash, secret)

    @functools.cached_property
    def _dummy_hash(self) -> str:
        return self.hash_with_key(secrets.token_hex(16))[0]

    @staticmethod
    def _raw(secret: str, salt: bytes, time_cost: int, memory_kib: int, parallelism: int) -> bytes:
        """Raises: HashingError: parameters libargon2 refuses. MemoryExhausted, ServerBusy."""
        try:
            return argon2id_raw(secret.encode("utf-8"), salt, time_cost=time_cost, memory_kib=memory_kib,
                                parallelism=parallelism, hash_len=_KDF_BYTES)
        except HashingError as error:  # argon2id_raw raises the faults itself; this for any other way they come
            raise resource_fault(fault_of(error)) or error from None


# The padding's steps: small argon2id evaluations (about 0.3 ms each here), libargon2's work with
# the GIL released, as an evaluation's is.
_PAD_KIB = 256
_PAD_SALT = bytes(16)


def _work_until(deadline: float) -> None:
    """Keep this thread working until ``deadline`` (``time.perf_counter``), then sleep what is left
    under one step. Not a sleep: a virtual CPU left idle for the padding's length may run the next
    evaluation up to a third slower (measured: 38.8 against 28.3 ms after a 30 ms sleep), which
    would tell a padded check from a real one by what follows it.

    Raises: MemoryExhausted, ServerBusy: no memory or threads for a step.
    """
    step = 0.0
    while deadline - time.perf_counter() > step:
        began = time.perf_counter()
        argon2id_raw(b"", _PAD_SALT, time_cost=1, memory_kib=_PAD_KIB, parallelism=1, hash_len=16)
        step = time.perf_counter() - began
    while time.perf_counter() < deadline:  # less than one step: not worth an idle CPU either
        pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
