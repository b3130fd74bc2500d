"""Authenticator: checks the factors given for a name once, under the lockout policy.

Password and OTP are both evaluated on every attempt and the result is a single yes or no: an
error never says which factor was wrong, nor whether an account of that name exists. Every
refusal (unknown name, wrong password, wrong OTP, a credential the account does not hold) does
the same work in the same order: the same admission transaction, one argon2 verification (against
a stand-in hash made with the current parameters for an unknown name), one unsealing of an OTP seed
in the HSM (a stand-in sealed seed for an unknown name), the same failure transaction, and one
audit record of one shape; and each counts toward the name's lock. The failure that locks the name
writes the same rows too: the holder's e-mail is queued by the background work (lock_notices.py).
Each OTP time step is accepted at most once per account.

What was typed as a name that no account has is not written to the audit trail or the log (those
records name ``UNKNOWN_NAME``): holders type their password into the account field. The lockout
keeps only its keyed hash (accounts/name_keys.py), and only while its run of failures lasts.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, or_, select, update

from signserver.accounts import otp
from signserver.accounts.holder_seal import public_half
from signserver.accounts.lock_notices import LockNotices
from signserver.accounts.lockout import Attempt, LockoutPolicy, check_name_tried
from signserver.accounts.model import Account, AccountStatus
from signserver.accounts.name_keys import NameKeys
from signserver.accounts.packages import new_seal_key, open_seal_key, seal_columns, seal_key_values
from signserver.accounts.passwords import SecretHasher
from signserver.accounts.repository import account_row, get_account
from signserver.audit.log import AuditLog
from signserver.clock import Clock
from signserver.errors import (AccountDisabled, AccountLocked, AuthenticationBusy, AuthenticationFailed, DataCorrupted,
                               ServerBusy, SignServerError)
from signserver.hsm.sealing import SealingKey
from signserver.notify.outbox import format_time
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import accounts

log = logging.getLogger(__name__)

BUSY_WAIT_SECONDS = 5.0  # how long an attempt waits for the name's other evaluations
BUSY_RETRY_SECONDS = 0.02
# The context the stand-in OTP seed is sealed to: no account name can equal it (names start
# with a letter or digit).
_STAND_IN_CONTEXT = b"\x00no account"
_NO_ROW = -1  # an account id no row has (ids count from 1)
# The audit subject of an attempt on a name no account has; no account name can equal it either.
UNKNOWN_NAME = "(unknown name)"


@dataclass(frozen=True)
class Authenticated:
    """A holder whose factors were right: the account, and the private half of its seal key,
    which opens the holder's signing data packages (kept for this request only)."""

    account: Account
    seal_key: bytes = field(repr=False)
    password_hash: str = field(repr=False)  # as checked: a change is made only over it
    otp_seed_sealed: bytes = field(repr=False)  # as checked (whether or not a code was asked)
    # The key the password yields with ``password_hash``: what locks a new seal key under the
    # same password (a replaced recovery code's).
    password_key: bytes = field(repr=False, default=b"")


class Authenticator:
    def __init__(self, database: Database, hasher: SecretHasher, lockout: LockoutPolicy,
                 sealing: SealingKey, audit: AuditLog, clock: Clock):
        self._database = database
        self._hasher = hasher
        self._lockout = lockout
        self._sealing = sealing
        self.names = NameKeys(database, sealing, clock)  # the keyed hashes the lockout keeps names by
        self.lock_notices = LockNotices(database, self.names, clock)  # whose e-mail the background work queues
        self._audit = audit
        self._clock = clock
        self._stand_in_lock = threading.Lock()
        self._stand_in_seed: bytes | None = None

    def authenticate(self, username: str, password: Secret, otp_code: str | None, otp_required: bool,
                     actor: str, holds_credential: bool = True) -> Account:
        """Check the factors and return the account. Raises: as :meth:`authenticate_holder`."""
        return self.authenticate_holder(username, password, otp_code, otp_required, actor, holds_credential).account

    def authenticate_holder(self, username: str, password: Secret, otp_code: str | None, otp_required: bool,
                            actor: str, holds_credential: bool = True) -> Authenticated:
        """Check the factors and return the account with its seal key, unlocked by the key the
        same argon2id evaluation derived from the password.

        ``holds_credential`` says whether the credential the caller named belongs to the account
        (False also for an unknown name): when False, the attempt fails like a wrong factor, after
        the same work and counted the same way.

        Raises:
            AuthenticationFailed: unknown name, wrong password, wrong, reused or malformed OTP, a
                credential the account does not hold (one message; each counted and audited alike).
            AccountLocked: the name is locked now, whether an account has it or not; says until when.
            AccountDisabled: the factors are right, but an operator disabled the account.
            AuthenticationBusy: the name's other attempts under evaluation leave no turn for now.
            InvalidArgument: a name no account can have (too long, control characters).
            HsmError, StoreUnavailable: a fault (the attempt then counts for nothing).
            MemoryExhausted, ServerBusy: the argon2id evaluation found no memory (a worker near its
                bound) or threads: a fault too, counted for nothing, whether the password is right
                or not.
            DataCorrupted: the lockout's key does not open with this token's sealing key.
        """
        check_name_tried(username)
        name_key = self.names.key_of(username)
        now = self._clock.now()
        try:
            row, attempt = self._admit(username, name_key, now)
        except AccountLocked:
            with self._database.transaction() as conn:
                subject = username if account_row(conn, username) is not None else UNKNOWN_NAME
                self._audit.append(conn, now, "auth.refused", actor, subject, reason=AccountLocked.__name__)
            raise

        try:
            password_key, step = self._check_factors(row, username, password, otp_code, otp_required, now)
        except BaseException:
            with self._database.transaction() as conn:
                self._lockout.abandon(conn, attempt)  # a fault is not a wrong guess
            raise

        with self._database.transaction() as conn:
            right = password_key is not None and (not otp_required or step is not None)
            # Accept each time step once: a replayed or older code fails here. A right code is
            # spent even when the attempt fails for the credential: it was shown once. Every
            # attempt runs the statement (matching no row when there is nothing to spend), so
            # that the work is the same on every path.
            spend = right and step is not None
            spent = conn.execute(update(accounts).where(
                accounts.c.id == (row.id if spend else _NO_ROW),
                or_(accounts.c.otp_last_step.is_(None), accounts.c.otp_last_step < (step or 0)))
                .values(otp_last_step=step)).rowcount == 1
            right = right and (spent or step is None)
            if right and holds_credential and row.status == AccountStatus.DISABLED.value:
                # Said only to whoever has the holder's factors: to anyone else it is the failure.
                self._lockout.abandon(conn, attempt)
                self._audit.append(conn, now, "auth.refused", actor, username, reason=AccountDisabled.__name__)
                refusal: Exception = AccountDisabled("the account is disabled; an operator must enable it")
            elif right and holds_credential:
                self._lockout.succeeded(conn, attempt)
                self._audit.append(conn, now, "auth.success", actor, username, otp=otp_required)
                account = get_account(conn, username, now, name_key)
                refusal = None
            else:
                self._record_failure(conn, attempt, row, username, actor, now)
                refusal = AuthenticationFailed()
        if refusal is not None:
            raise refusal
        seal_key, password_hash, password_key = self._seal_key(row, username, password, password_key)
        return Authenticated(account, seal_key, password_hash, row.otp_seed_sealed, password_key)

    @staticmethod
    def as_checked(holder: Authenticated) -> tuple:
        """Conditions on ``accounts`` that hold while the holder's account is as its factors were
        checked against: active, with the same password hash, seal key and OTP seed. For an UPDATE
        that writes what the factors allow (a new password, a new recovery code) only over that
        account, in one statement; when it changes no row, :meth:`changed_since_checked` tells the
        refusal."""
        return (accounts.c.id == holder.account.id, accounts.c.status == AccountStatus.ACTIVE.value,
                accounts.c.password_hash == holder.password_hash,
                accounts.c.seal_public_key == public_half(holder.seal_key),
                accounts.c.otp_seed_sealed == holder.otp_seed_sealed)

    @staticmethod
    def changed_since_checked(conn: Connection, holder: Authenticated) -> SignServerError | None:
        """In the caller's transaction, before it writes what the holder's factors allow (an
        activation token): the refusal to give if the account changed since its factors were
        checked, else None. The factors were checked against the row read when the attempt was
        admitted; meanwhile another request may have disabled the account, or changed what the
        factors are checked against (password, seal key, OTP seed: a password change, an unlock,
        a reset, an OTP reset), each of which revokes the account's activation tokens, but only
        those that exist when it commits.

        The row is read again under a share lock on PostgreSQL (SQLite's writers run one at a
        time): a change of the account waits for the caller's transaction to commit, so its
        revocation then finds what the caller wrote; a change that committed first is seen here.

        Returns:
            AccountDisabled: disabled meanwhile (the answer the factors' check gives a disabled
                account, to whoever gives its right factors).
            AuthenticationBusy: the password, seal key or OTP seed changed meanwhile (or the
                account went); not counted toward the lock. Not AuthenticationFailed, which would
                tell a caller whose factors were right when checked that they were wrong: "try
                again" is what a caller can act on, and the answer the check itself gives when the
                password changes while it is checked (see _seal_key). The next attempt is checked
                against the account as it is now, and refused (and counted) if the factors no
                longer fit.
        """
        row = conn.execute(select(accounts.c.status, accounts.c.password_hash, accounts.c.seal_public_key,
                                  accounts.c.otp_seed_sealed)
                           .where(accounts.c.id == holder.account.id).with_for_update(read=True)).first()
        if row is not None and row.status == AccountStatus.DISABLED.value:
            return AccountDisabled("the account is disabled; an operator must enable it")
        if (row is None or row.status != AccountStatus.ACTIVE.value or row.password_hash != holder.password_hash
                or row.seal_public_key != public_half(holder.seal_key)
                or row.otp_seed_sealed != holder.otp_seed_sealed):
            return AuthenticationBusy("the account's password, seal key or OTP changed while its factors were "
                                      "checked; try again")
        return None

    def _seal_key(self, row, username: str, password: Secret, password_key: bytes) -> tuple[bytes, str, bytes]:
        """The account's seal key, unlocked with the password's key, the password's hash and the
        key it yields. A
        hash made with other parameters, or one older than packages (which yields no key), is made
        again, and a seal key made for an account that has none; only after a success: work done
        as soon as the password matched would cost time whenever the password is right, telling
        it apart from a wrong OTP.

        The success is recorded (and an OTP spent) by then, so a hash made again only for other
        parameters waits for a later success when the evaluation faults (MemoryExhausted): the
        holder, whose seal key opened, is not refused for it.

        Raises:
            DataCorrupted: the stored seal key does not open with the password's key, or the
                account has a seal key but its password hash yields no key.
            AuthenticationBusy: the password changed while this attempt was checked.
            MemoryExhausted, ServerBusy: no memory for the seal key's first hash (an account older
                than packages).
        """
        private = None
        if row.seal_key_by_password is not None:
            if not password_key:
                raise DataCorrupted(f"the account {username!r} has a seal key but an older password hash")
            private = open_seal_key(username, row.seal_key_by_password, password_key, "password")
            if not self._hasher.needs_rehash(row.password_hash):
                return private, row.password_hash, password_key
        try:
            new_hash, new_key = self._hasher.hash_with_key(password.reveal())
        except ServerBusy:  # MemoryExhausted too
            if private is None:
                raise
            log.warning("a password hash of older parameters is kept until a later sign-in: no memory to make it "
                        "again now")
            return private, row.password_hash, password_key
        values = {"password_hash": new_hash}
        if private is None:  # an account older than packages: its seal key starts now
            private, seal = new_seal_key(username, new_key, None)
            values.update(seal_columns(seal))
        else:
            values["seal_key_by_password"] = seal_key_values(username, private, row.seal_public_key, new_key,
                                                             None).by_password
        with self._database.transaction() as conn:
            # Only over the hash that was checked: a seal key made here must be the one stored.
            stored = conn.execute(update(accounts).where(accounts.c.id == row.id,
                                                         accounts.c.password_hash == row.password_hash)
                                  .values(**values)).rowcount == 1
        if not stored:
            raise AuthenticationBusy("the password changed while it was checked; try again")
        return private, new_hash, new_key

    def _admit(self, username: str, name_key: str, now: datetime.datetime):
        """The account's row (None for an unknown name) and an admitted attempt; waits a little
        while the name's other attempts are being evaluated.

        Raises: AccountLocked, AuthenticationBusy (still no turn after BUSY_WAIT_SECONDS).
        """
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                with self._database.transaction() as conn:
                    row = account_row(conn, username)
                    return row, self._lockout.begin_attempt(conn, name_key, now)
            except AuthenticationBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(BUSY_RETRY_SECONDS)

    def _check_factors(self, row, username: str, password: Secret, otp_code: str | None, otp_required: bool,
                       now: datetime.datetime) -> tuple[bytes | None, int | None]:
        """The key the password yields (None: wrong password; empty for a right password whose
        hash yields no key), and the OTP's time step (None: wrong or not asked for).

        For an unknown name (``row`` None) the same work is done against stand-ins that never
        match. Raises: HsmError, DataCorrupted.
        """
        if row is None:
            self._hasher.burn(password.reveal())
            password_key = None
            sealed, context = self._stand_in_sealed_seed(), _STAND_IN_CONTEXT
        else:
            derived = self._hasher.derive(row.password_hash, password.reveal())
            password_key = (derived.key or b"") if derived.matched else None
            sealed, context = row.otp_seed_sealed, username.encode("utf-8")
        if not otp_required:
            return password_key, None
        seed = self._sealing.unseal(sealed, context).decode("ascii")
        step = otp.matching_step(seed, otp_code or "", now)
        return password_key, (step if row is not None else None)

    def _stand_in_sealed_seed(self) -> bytes:
        """A sealed random OTP seed, made once per process, opened for unknown names."""
        with self._stand_in_lock:
            if self._stand_in_seed is None:
                self._stand_in_seed = self._sealing.seal(otp.new_seed().encode("ascii"), _STAND_IN_CONTEXT)
            return self._stand_in_seed

    def _record_failure(self, conn: Connection, attempt: Attempt, row, username: str, actor: str,
                        now: datetime.datetime) -> None:
        failure = self._lockout.failed(conn, attempt, now)
        subject = username if row is not None else UNKNOWN_NAME
        self._audit.append(conn, now, "auth.failure", actor, subject, attempt=failure.count)
        if failure.locked_until is None:
            return
        until = format_time(failure.locked_until)
        self._audit.append(conn, now, "account.locked", actor, subject, until=until)
        # The same row whether or not an account has the name; the background work queues the
        # holder's e-mail from it. Reading the account and queueing the e-mail here, for an
        # account only, would make this attempt slower when the name is an account's.
        self.lock_notices.record(conn, attempt.name_key, row.id if row is not None else None, failure.locked_until,
                                 now)
        if row is None:
            log.warning("an unknown name locked until %s after %d failed attempts", until, failure.count)
        else:
            log.warning("name %s locked until %s after %d failed attempts", username, until, failure.count)
