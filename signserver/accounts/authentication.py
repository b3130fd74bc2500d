"""Authenticator: checks an account's factors once, under the lockout policy.

Password and OTP are both evaluated on every attempt and the result is a single yes or no: an
error never says which factor was wrong. Each OTP time step is accepted at most once per account.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import or_, update

from signserver.accounts import otp
from signserver.accounts.lockout import Attempt, LockoutPolicy
from signserver.accounts.model import Account
from signserver.accounts.passwords import SecretHasher
from signserver.accounts.repository import account_row, get_account, update_account
from signserver.audit.log import AuditLog
from signserver.clock import Clock
from signserver.errors import AccountDisabled, AccountLocked, AuthenticationBusy, AuthenticationFailed
from signserver.hsm.sealing import SealingKey
from signserver.notify.outbox import format_time, queue_email
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import accounts

log = logging.getLogger(__name__)

BUSY_WAIT_SECONDS = 5.0  # how long an attempt waits for the account's other evaluations
BUSY_RETRY_SECONDS = 0.02


class Authenticator:
    def __init__(self, database: Database, hasher: SecretHasher, lockout: LockoutPolicy,
                 sealing: SealingKey, audit: AuditLog, clock: Clock):
        self._database = database
        self._hasher = hasher
        self._lockout = lockout
        self._sealing = sealing
        self._audit = audit
        self._clock = clock

    def authenticate(self, username: str, password: Secret, otp_code: str | None, otp_required: bool,
                     actor: str) -> Account:
        """Check the factors and return the account.

        Raises:
            AuthenticationFailed: unknown account, wrong password, wrong or reused OTP (one message).
            AccountLocked: locked now; says until when.
            AccountDisabled: disabled by an operator.
        """
        now = self._clock.now()
        try:
            row, attempt = self._admit(username, now)
        except (AccountLocked, AccountDisabled) as refusal:
            with self._database.transaction() as conn:
                self._audit.append(conn, now, "auth.refused", actor, username, reason=type(refusal).__name__)
            raise
        if row is None:
            self._hasher.burn(password.reveal())  # as slow as a real check: existence stays hidden
            with self._database.transaction() as conn:
                self._audit.append(conn, now, "auth.failure", actor, username)
            raise AuthenticationFailed()

        try:
            password_ok = self._hasher.verify(row.password_hash, password.reveal())
            step = None
            if otp_required:
                seed = self._sealing.unseal(row.otp_seed_sealed, username.encode("utf-8")).decode("ascii")
                step = otp.matching_step(seed, otp_code or "", now)
            new_hash = (self._hasher.hash(password.reveal())
                        if password_ok and self._hasher.needs_rehash(row.password_hash) else None)
        except BaseException:
            with self._database.transaction() as conn:
                self._lockout.abandon(conn, attempt)  # a fault is not a wrong guess
            raise

        with self._database.transaction() as conn:
            ok = password_ok and (not otp_required or step is not None)
            if ok and step is not None:
                # Accept each time step once: a replayed or older code fails here.
                ok = conn.execute(update(accounts).where(
                    accounts.c.id == row.id,
                    or_(accounts.c.otp_last_step.is_(None), accounts.c.otp_last_step < step))
                    .values(otp_last_step=step)).rowcount == 1
            if ok:
                self._lockout.succeeded(conn, attempt)
                if new_hash:
                    update_account(conn, row.id, password_hash=new_hash)
                self._audit.append(conn, now, "auth.success", actor, username, otp=otp_required)
                return get_account(conn, username, now)
            self._record_failure(conn, attempt, username, actor, now)
        raise AuthenticationFailed()

    def _admit(self, username: str, now):
        """The account's row and an admitted attempt (None, None for an unknown account); waits
        a little while the account's other attempts are being evaluated."""
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                with self._database.transaction() as conn:
                    row = account_row(conn, username)
                    if row is None:
                        return None, None
                    return row, self._lockout.begin_attempt(conn, row.id, now)
            except AuthenticationBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(BUSY_RETRY_SECONDS)

    def _record_failure(self, conn, attempt: Attempt, username: str, actor: str, now) -> None:
        locked = self._lockout.failed(conn, attempt, now)
        account = get_account(conn, username, now)
        self._audit.append(conn, now, "auth.failure", actor, username, attempt=account.failed_attempts)
        if locked:
            until = self._lockout.lock_end(now)
            self._audit.append(conn, now, "account.locked", actor, username, until=format_time(until))
            queue_email(conn, now, account.emails, "account_locked", holder_name=account.holder_name,
                        username=username, until=format_time(until))
            log.warning("account %s locked until %s after %d failed attempts", username, until,
                        account.failed_attempts)
