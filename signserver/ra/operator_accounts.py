"""OperatorAccounts: the RA operators who sign in to the operators' pages with a name, a password
and a one-time password (TOTP), as an alternative to an RA client certificate.

The password is kept as an argon2id hash; the OTP seed sealed with AES-GCM under the RA's secret
key (signserver/ra/secret_key.py), the operator's name as associated data, so a seed copied to
another operator's row does not open. A sign-in is refused with one error whatever was wrong (an
unknown name, the password, the one-time password or its reuse), after the same work on every
path, the path of a locked name included; each TOTP step is accepted once. Five failures lock a
name for 30 minutes whether or not an operator has it (signserver/ra/operator_lockout.py), so a
lock tells no more than a refusal. An argon2id evaluation the RA has no memory or threads for
says nothing of the password: the sign-in is refused with OperatorCheckBusy and counts toward no
lock. Disabling an account or resetting its password ends the operator's sessions on the pages.
Every change, sign-in and refusal of a known operator goes to the RA's audit trail; never a
secret."""

from __future__ import annotations

import datetime
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

import argon2
import pyotp
from argon2.exceptions import HashingError, InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from signserver.argon2_faults import MEMORY, THREADS, fault_of
from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.ra.errors import (OperatorAccountRefused, OperatorAuthenticationFailed, OperatorDisabled,
                                  OperatorLocked, SettingsError, StepRefused, StoreUnavailable)
from signserver.ra.operator_lockout import LOCK_SECONDS, OperatorLockout  # noqa: F401 (the lock's length)
from signserver.ra.renewal import check_new_password
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase

log = logging.getLogger(__name__)

OPERATOR_SESSIONS = "operator"  # the kind of the pages' sessions an operator signs in to
OTP_DIGITS = 6
OTP_STEP_SECONDS = 30
OTP_DRIFT_STEPS = 1  # one step either way, for a phone's clock slightly off
OTP_ISSUER = "signserver RA"
NONCE_BYTES = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a bound keeps a sign-in's cost bounded
NAME = re.compile(r"[\w.@-]{1,128}")


def password_hasher(memory_kib: int = 19 * 1024, time_cost: int = 2) -> argon2.PasswordHasher:
    """argon2id at these costs, one lane; the defaults are OWASP's (19 MiB, 2 passes: about 25 ms
    here). A hash keeps the costs it was made with: changed costs apply to new passwords, and to
    a stored one at its next sign-in."""
    return argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=argon2.Type.ID)


DEFAULT_HASHER = password_hasher()
REFUSED = "the operator name, password or one-time password is not right"


class OperatorCheckBusy(StoreUnavailable):
    """The RA had no memory (or could not start a thread) for an argon2id evaluation of an
    operator's password: a fault of the RA, not an answer about the password, so it counts toward
    no lock. A StoreUnavailable, so that the pages, the API and the commands answer it as the RA's
    other refusals of what it cannot do now (503: try again later)."""


@dataclass(frozen=True)
class OperatorAccount:
    """An operator account as listed: never its hash or seed. ``locked_until`` only while locked."""

    name: str
    created_at: datetime.datetime
    created_by: str
    disabled_at: datetime.datetime | None
    locked_until: datetime.datetime | None
    failures: int

    @property
    def status(self) -> str:
        return "disabled" if self.disabled_at else "locked" if self.locked_until else "active"


class OperatorAccounts:
    """Adds, changes, lists and authenticates operator accounts. ``secret_key``: the RA's 32-byte
    key; ``operators``: when not empty, the only names that may be added or sign in
    (ra.operators); ``sessions``: the pages' SessionStore (``end_sessions(kind, subject)``), whose
    sessions of an operator end when the account is disabled or its password reset (None: the
    caller has no pages' sessions to end); ``hasher``: the passwords' argon2id hasher
    (ra.operator_argon2_memory_kib and ra.operator_argon2_time_cost)."""

    def __init__(self, database: RaDatabase, clock: Clock, secret_key: bytes, operators: tuple[str, ...] = (),
                 sessions=None, hasher: argon2.PasswordHasher = DEFAULT_HASHER):
        self._database = database
        self._hasher = hasher
        self._clock = clock
        self._aead = AESGCM(secret_key)
        self._operators = frozenset(operators)
        self._lockout = OperatorLockout(secret_key)
        self._sessions = sessions
        # Spent on a name that has no account, so that its refusal costs what a known name's does.
        self._dummy_hash = self._hash(secrets.token_urlsafe(16))
        self._dummy_sealed = self._seal("", pyotp.random_base32(32))

    @classmethod
    def from_settings(cls, settings, database: RaDatabase, clock: Clock, sessions=None) -> OperatorAccounts:
        """With the RA's secret key (made when missing) and ra.operators; ``sessions`` as the
        constructor's.

        Raises: SettingsError: the secret key file is unusable.
        """
        from signserver.ra.secret_key import load_secret_key

        return cls(database, clock, load_secret_key(settings.secret_key_file), tuple(settings.operators),
                   sessions, password_hasher(settings.operator_argon2_memory_kib, settings.operator_argon2_time_cost))

    # --- changes ------------------------------------------------------------------------------

    def add(self, name: str, password: str, actor: str) -> str:
        """A new operator account; returns its otpauth:// URI, for the operator's authenticator
        app (shown once: only the sealed seed is kept).

        Raises: OperatorAccountRefused (a name malformed, outside ra.operators or taken; a password
        that breaks the rules: 8 characters or more, a letter and a non-letter), StoreUnavailable
        (OperatorCheckBusy: no memory or threads to hash the password).
        """
        self._check_name(name)
        _check_password(password)
        seed = pyotp.random_base32(32)
        values = {"name": name, "password_hash": self._hash(password), "otp_seed_sealed": self._seal(name, seed),
                  "last_otp_step": None, "disabled_at": None,
                  "created_at": epoch_seconds(self._clock.now()), "created_by": actor}
        with self._database.transaction() as conn:
            added = repository.insert_operator(conn, values)
            if added:
                repository.audit(conn, self._clock.now(), actor, "operator_added", detail=f"operator={name}")
        if not added:
            raise OperatorAccountRefused(f"there is an operator {name!r} already; to give it a new password and "
                                         "OTP seed, reset its password")
        return _otp_uri(seed, name)

    def reset_password(self, name: str, password: str, actor: str) -> str:
        """A new password and a new OTP seed (the old authenticator entry stops working); the
        failures, any lock and the operator's sessions on the pages end. Returns the new
        otpauth:// URI, shown once.

        Raises: OperatorAccountRefused (no such operator, a disabled one, a password that breaks
        the rules), StoreUnavailable (OperatorCheckBusy: no memory or threads to hash the password).
        """
        _check_password(password)
        seed = pyotp.random_base32(32)
        password_hash = self._hash(password)
        with self._database.transaction() as conn:
            row = repository.find_operator(conn, name, for_update=True)
            if row is not None and row.disabled_at is None:
                repository.update_operator(conn, name, password_hash=password_hash,
                                           otp_seed_sealed=self._seal(name, seed), last_otp_step=None)
                self._lockout.succeeded(conn, name)
                repository.audit(conn, self._clock.now(), actor, "operator_password_reset", detail=f"operator={name}")
        if row is None:
            raise OperatorAccountRefused(f"there is no operator {name!r}")
        if row.disabled_at is not None:
            raise OperatorAccountRefused(f"the operator {name!r} is disabled; a disabled account stays so")
        self._end_sessions(name)
        return _otp_uri(seed, name)

    def disable(self, name: str, actor: str) -> None:
        """The operator can no longer sign in with the account (for good: the name stays taken,
        so the audit trail's entries under it keep naming one person); the operator's sessions
        on the pages end. Disabling a disabled account changes nothing.

        Raises: OperatorAccountRefused (no such operator), StoreUnavailable.
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            row = repository.find_operator(conn, name, for_update=True)
            if row is not None and row.disabled_at is None:
                repository.update_operator(conn, name, disabled_at=epoch_seconds(now))
                repository.audit(conn, now, actor, "operator_disabled", detail=f"operator={name}")
        if row is None:
            raise OperatorAccountRefused(f"there is no operator {name!r}")
        self._end_sessions(name)

    def is_active(self, name: str) -> bool:
        """Whether an operator signed in as ``name`` may go on acting (asked on every operator
        page): the name is allowed (ra.operators) and no disabled account holds it. An operator
        who signed in with an RA client certificate may have no account at all.

        Raises: StoreUnavailable.
        """
        if not self._may_sign_in(name):
            return False
        with self._database.transaction() as conn:
            row = repository.find_operator(conn, name)
        return row is None or row.disabled_at is None

    def list(self) -> list[OperatorAccount]:
        """Every operator account, by name. Raises: StoreUnavailable."""
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            rows = repository.list_operators(conn)
            runs = self._lockout.states(conn, [row.name for row in rows], now)
        listed = []
        for row in rows:
            run = runs.get(row.name)
            listed.append(OperatorAccount(
                name=row.name, created_at=from_epoch(row.created_at), created_by=row.created_by,
                disabled_at=from_epoch(row.disabled_at) if row.disabled_at is not None else None,
                locked_until=from_epoch(run.locked_until) if run and run.locked_until is not None else None,
                failures=run.failures if run else 0))
        return listed

    # --- signing in ---------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, otp: str) -> str:
        """The operator's name, when the password and the one-time password are right and that
        one-time password was not used before.

        Raises:
            OperatorAuthenticationFailed: an unknown name (or one outside ra.operators), a wrong
                password, a wrong or already used one-time password: one message for all.
            OperatorDisabled: the factors were right but the account is disabled.
            OperatorLocked: too many failures with this name, known or not: locked until
                ``locked_until`` (also raised by the failure that locks it).
            SettingsError: the RA's secret key is not the one that sealed the seed.
            OperatorCheckBusy: no memory or threads to check the password (with any name and any
                password: it counts toward no lock).
            StoreUnavailable.
        """
        now = self._clock.now()
        t = epoch_seconds(now)
        with self._database.transaction() as conn:
            row = repository.find_operator(conn, name) if self._may_sign_in(name) else None
            admission = self._lockout.begin(conn, name, t)
            if admission.locked_now and row is not None and row.disabled_at is None:
                repository.audit(conn, now, name, "operator_locked", detail=f"operator={name} unevaluated=1")

        # The same work on every path (an unknown name, a locked one): one argon2id verification,
        # one unsealing, one TOTP comparison over the same steps; a dummy account stands in.
        evaluated = row if admission.locked_until is None else None
        try:
            stored_hash = evaluated.password_hash if evaluated is not None else self._dummy_hash
            password_right = self._verify(stored_hash, password)
            seed = (self._unseal(name, evaluated.otp_seed_sealed) if evaluated is not None
                    else self._unseal("", self._dummy_sealed))
        except (SettingsError, OperatorCheckBusy):  # not a wrong guess: counts for nothing
            if admission.locked_until is None:
                self._abandon(name)
            raise
        step = _matching_step(seed, otp, t)
        if admission.locked_until is not None:
            raise _locked(name, admission.locked_until)
        factors_right = evaluated is not None and password_right and step is not None
        active = row is not None and row.disabled_at is None

        locked_until: int | None = None
        with self._database.transaction() as conn:
            signed_in = factors_right and active and repository.operator_signed_in(conn, name, step)
            if signed_in:
                self._lockout.succeeded(conn, name)
                rehashed = self._rehashed(row.password_hash, password)
                if rehashed is not None:
                    repository.update_operator(conn, name, password_hash=rehashed)
                repository.audit(conn, now, name, "operator_signed_in", detail="with=password+otp")
            elif factors_right and not active:
                self._lockout.abandon(conn, name)  # not a wrong guess
            else:
                failure = self._lockout.failed(conn, name, t)
                locked_until = failure.locked_until
                if active and locked_until is not None:
                    repository.audit(conn, now, name, "operator_locked", detail=f"operator={name}")
                elif active:
                    repository.audit(conn, now, name, "operator_sign_in_refused",
                                     detail=f"operator={name} failures={failure.count}")
        if factors_right and not active:
            raise OperatorDisabled("the operator account is disabled")
        if locked_until is not None:
            raise _locked(name, locked_until)
        if not signed_in:
            raise OperatorAuthenticationFailed(REFUSED)
        return name

    def certificate_signed_in(self, name: str, certificate_serial: str) -> None:
        """Record in the audit trail that ``name`` signed in with an RA client certificate.

        Raises: StoreUnavailable.
        """
        with self._database.transaction() as conn:
            repository.audit(conn, self._clock.now(), name, "operator_signed_in",
                             detail=f"with=certificate serial={certificate_serial}")

    # --- helpers --------------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not NAME.fullmatch(name):
            raise OperatorAccountRefused("an operator name has 1 to 128 letters, digits and the signs . _ @ -")
        if self._operators and name not in self._operators:
            raise OperatorAccountRefused(f"{name!r} is not one of ra.operators; add the name there first")

    def _abandon(self, name: str) -> None:
        with self._database.transaction() as conn:
            self._lockout.abandon(conn, name)

    def _end_sessions(self, name: str) -> None:
        if self._sessions is not None:
            self._sessions.end_sessions(OPERATOR_SESSIONS, name)

    def _may_sign_in(self, name: str) -> bool:
        return bool(NAME.fullmatch(name)) and (not self._operators or name in self._operators)

    def _seal(self, name: str, seed: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, seed.encode("ascii"), name.encode("utf-8"))

    def _verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; a hash that is not one does not match.

        Raises: OperatorCheckBusy: no memory or threads for the evaluation.
        """
        too_long = len(password) > MAX_PASSWORD_LENGTH  # no password is: refused after the same work
        try:
            return self._hasher.verify(password_hash, password[:MAX_PASSWORD_LENGTH]) and not too_long
        except InvalidHashError:
            return False
        except VerificationError as error:  # a mismatch or a malformed hash, unless libargon2 lacked a resource
            fault = _argon2_fault(error, "check an operator's password")
            if fault is not None:
                raise fault from None
            return False

    def _hash(self, password: str) -> str:
        """Raises: OperatorCheckBusy: no memory or threads for the evaluation."""
        try:
            return self._hasher.hash(password)
        except HashingError as error:
            raise _argon2_fault(error, "hash an operator's password") or error from None

    def _rehashed(self, password_hash: str, password: str) -> str | None:
        """A new hash of ``password`` when ``password_hash`` was made at other costs, else None.
        None too when the RA lacks the memory for it: the factors were right and the code is
        spent, so the sign-in goes on, and the hash is made again at a later one."""
        if not self._hasher.check_needs_rehash(password_hash):
            return None
        try:
            return self._hash(password)
        except OperatorCheckBusy:
            return None

    def _unseal(self, name: str, sealed: bytes) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode("utf-8")).decode("ascii")
        except (InvalidTag, ValueError):
            raise SettingsError(f"the RA's secret key does not open operator {name!r}'s OTP seed: restore the key "
                                "that sealed it (ra.secret_key_file), or reset the operator's password") from None


def _check_password(password: str) -> None:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise OperatorAccountRefused(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    try:
        check_new_password(password, password)
    except StepRefused as exc:
        raise OperatorAccountRefused(str(exc)) from None


def _argon2_fault(error: Exception, doing: str) -> OperatorCheckBusy | None:
    """The refusal for an argon2-cffi error that says this process lacked memory or a thread to
    ``doing`` (completes "to ..."; signserver.argon2_faults), logged at WARNING; None for any other
    (a mismatch, a malformed hash)."""
    fault = fault_of(error)
    if fault == MEMORY:
        log.warning("an argon2id evaluation found no memory to %s: refused as busy, not as a wrong password", doing)
        return OperatorCheckBusy(f"the RA has no memory left to {doing} now; nothing is counted: try again shortly")
    if fault == THREADS:
        log.warning("an argon2id evaluation could not start its threads to %s: refused as busy, not as a wrong "
                    "password", doing)
        return OperatorCheckBusy(f"the RA cannot start the threads to {doing} now; nothing is counted: try again "
                                 "shortly")
    return None


def _matching_step(seed: str, code: str, now: int) -> int | None:
    """The time step whose code is ``code`` (the current step or one either side), else None.
    Every candidate is computed and compared in constant time, whatever ``code`` looks like."""
    formed = len(code) == OTP_DIGITS and code.isascii() and code.isdigit()
    candidate = code.encode("ascii") if formed else b""
    totp = pyotp.TOTP(seed, digits=OTP_DIGITS, interval=OTP_STEP_SECONDS)
    current = now // OTP_STEP_SECONDS
    found = None
    for step in range(current - OTP_DRIFT_STEPS, current + OTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode("ascii"), candidate) and formed:
            found = step
    return found


def _otp_uri(seed: str, name: str) -> str:
    return pyotp.TOTP(seed, digits=OTP_DIGITS, interval=OTP_STEP_SECONDS).provisioning_uri(
        name=name, issuer_name=OTP_ISSUER)


def _locked(name: str, until: int) -> OperatorLocked:
    end = from_epoch(until)
    return OperatorLocked(f"too many failed sign-ins as {name}: locked until "
                          f"{end.isoformat(timespec='minutes')}", end)
