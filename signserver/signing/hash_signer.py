"""HashSigner: authorise signatures for a holder's credential, then sign digests with it.

The two steps of the remote-signing standards: ``authorize`` checks the holder's factors once
and returns an activation token bound to the credential and the digests; ``sign_hashes`` spends
the token and signs in the HSM. A holder's credential is reachable only through that holder's
factors, and only by an application whose policy covers the holder's account (which credentials
an application sees, and when one may sign: CredentialDirectory).

What an application learns about an account it names, without the holder's factors, never tells a
known name from an unknown one: Authorize refuses both alike (see Authenticator).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator

from signserver.accounts.applications import ApplicationRegistry
from signserver.accounts.authentication import Authenticator
from signserver.accounts.model import Application, Credential
from signserver.accounts.packages import SigningPackages, key_to_open_from
from signserver.audit.log import AuditLog
from signserver.clock import Clock
from signserver.errors import (
    CredentialUnusable,
    HsmUnavailable,
    InvalidArgument,
    KeyNotFound,
    SignServerError,
    UnsupportedAlgorithm,
)
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.packages import KeyNotOpen, KeyToOpen, PackageKeys
from signserver.monitoring.meter import meter
from signserver.secret import Secret
from signserver.signing import activation, spend_call
from signserver.signing.activation import IssuedToken
from signserver.signing.credential_directory import CredentialDirectory, NewestCertificate, check_usable
from signserver.signing.moved_package import as_wrapped_now
from signserver.signing.recent_credentials import RecentCredentials
from signserver.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Authorization(IssuedToken):
    """An activation token and the credential it was issued for (chosen by Authorize when the
    caller named none)."""

    credential_id: str = ""


@dataclass(frozen=True)
class Spent:
    """Digests an activation token was spent on, and what signing them takes."""

    credential: Credential
    token_hash: str
    to_open: KeyToOpen | None  # the package's key, when it was not open in this process
    signatures: int  # how many digests: the signatures expected of the key
    last: bool = False  # the token's last digest was among them


FORGET_BATCH = 500  # expired tokens' keys erased in one transaction
# What a caller hears when this server cannot open a holder's package because the token lacks its
# master key: the key's label, the token's and the remedy (the key ceremony) are the log's.
MASTER_KEY_MISSING = ("the holder's key cannot be opened on this server at the moment; try again with a new "
                      "authorisation")


class HashSigner:
    """Authorize (the holder's factors, once, for an activation token) and the spending of that
    token on signatures, for digests (SignHash) and for the documents' flows (:meth:`spend` and
    :meth:`signing`)."""

    def __init__(self, database: Database, keys: HsmKeyStore, packages: SigningPackages, package_keys: PackageKeys,
                 applications: ApplicationRegistry, credentials: CredentialDirectory, authenticator: Authenticator,
                 audit: AuditLog, clock: Clock, token_lifetime: datetime.timedelta, max_signatures: int):
        self._database = database
        self._keys = keys
        self._credentials = credentials
        self._packages = packages
        self._package_keys = package_keys
        self._applications = applications
        self._authenticator = authenticator
        self._audit = audit
        self._clock = clock
        self._lifetime = token_lifetime
        self.max_signatures = max_signatures
        self._recent = RecentCredentials()  # PostgreSQL's way to a signature: see _spend_in_one_call

    @property
    def token_lifetime(self) -> datetime.timedelta:
        return self._lifetime

    def authorize(self, application: Application, username: str, password: Secret, otp_code: str | None,
                  credential_id: str, hash_algorithm: HashAlgorithm, digests: list[bytes]) -> Authorization:
        """Check the holder's factors once and issue an activation token for these digests.

        ``credential_id`` empty means the holder's signing credential: the newest active one that
        may sign now, chosen once the factors are right (the answer names it).

        A credential the account does not hold is refused like a wrong factor, after the factors
        are checked and counted as a failed attempt: a refusal never says whether the account
        exists, nor whose the credential is.

        Raises:
            InvalidArgument: bad digests or credential id. PermissionDenied: the application may
                not serve the account.
            AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy: the factors
                (see Authenticator.authenticate); AccountDisabled and AuthenticationBusy also when
                the account was disabled, or its password, seal key or OTP changed, while they were
                checked (see Authenticator.changed_since_checked): no token is issued.
            CredentialUnusable: the factors are right, but the credential (or, none named, every
                active credential of the account) may not sign now.
        """
        activation.check_digests(digests, hash_algorithm, self.max_signatures)
        if len(credential_id) > 64:
            raise InvalidArgument("a credential id has at most 64 characters")
        self._applications.check_may_serve(application, username)
        # Read before the factors, by its id only: the same work whoever the name is.
        named = self._credentials.named(credential_id) if credential_id else None
        holds = not credential_id or (named is not None and named[0].username == username)
        actor = f"application:{application.name}"
        holder = self._authenticator.authenticate_holder(username, password, otp_code, application.otp_required,
                                                         actor=actor, holds_credential=holds)
        account = holder.account
        now = self._clock.now()
        chosen = named if named is not None else self._credentials.signing_credential(account.id, now)
        credential = check_usable(*chosen, now)
        self._keep_usable(*chosen)  # the SignHash that follows spares a read on this worker
        seal_for_token = None
        if credential.is_package:
            # Opened with the holder's seal key, and handed on sealed to the activation token.
            self._rewrap_if_stale(credential.key_id)
            with self._database.read() as conn:
                wrapped_private = self._packages.open(conn, credential.key_id, username, holder.seal_key)
            seal_for_token = functools.partial(self._packages.seal_for_token, wrapped_private)
        with self._database.transaction() as conn:
            # The factors were checked against the account as read when the attempt was admitted.
            # A disable, or a change of password, seal key or OTP, that committed since revoked the
            # tokens there were, not this one: the account is read again here (locked against such
            # a change until this commits, on PostgreSQL) and no token is issued across a change.
            refusal = self._authenticator.changed_since_checked(conn, holder)
            if refusal is None:
                issued = activation.issue(conn, credential_id=credential.id, account_id=account.id,
                                          application_id=application.id, algorithm=hash_algorithm,
                                          digests=digests, now=now, lifetime=self._lifetime, seal_key=seal_for_token)
                self._audit.append(conn, now, "authorization.issued", actor, username, credential=credential.id,
                                   digests=len(digests), digests_sha256=hashlib.sha256(b"".join(digests)).hexdigest())
            else:
                self._audit.append(conn, now, "authorization.refused", actor, username, credential=credential.id,
                                   reason=type(refusal).__name__)
        if refusal is not None:
            raise refusal
        meter().activation_tokens("issued")
        return Authorization(token=issued.token, expires_at=issued.expires_at, digests=issued.digests,
                             credential_id=credential.id)

    def sign_hashes(self, application: Application, credential_id: str, token: Secret,
                    algorithm: SignatureAlgorithm, digests: list[bytes]) -> list[bytes]:
        """Spend the activation token and sign each digest in the HSM, in order.

        Raises:
            InvalidArgument: bad digests; UnsupportedAlgorithm: the algorithm does not fit the key.
            ActivationRefused: the token does not authorise this (see activation.consume).
            NotFound: the credential is unknown to this application.
            HsmError: the HSM failed (the token's digests stay spent).
        """
        if algorithm.hash is None:
            raise UnsupportedAlgorithm("signing digests needs a hash-based algorithm (Ed25519 signs data)")
        activation.check_digests(digests, algorithm.hash, self.max_signatures)
        actor = f"application:{application.name}"
        now = self._clock.now()
        details = [{"credential": credential_id, "digest": d.hex(), "algorithm": algorithm.value} for d in digests]
        # The signatures are recorded in the transaction that spends the token, before the HSM
        # signs: one write transaction per call, and no signature without its record. No HSM
        # call runs inside it (opening a package or a first lookup of a key takes milliseconds,
        # and the transaction holds the database's write lock); should the HSM then refuse or
        # fail, a ``signature.failed`` record follows. On PostgreSQL that transaction is one call
        # of a database function, for the round trips a transaction of statements would cost.
        if self._database.is_sqlite:
            def spend() -> Spent:
                with self._database.transaction() as conn:
                    spent = self._spend_in(conn, application, credential_id, token, algorithm.hash, digests,
                                           algorithm.check_key, now)
                    self._audit.append_many(conn, now, "signature", actor, spent.credential.username, details)
                return spent
        else:
            def spend() -> Spent:
                return self._spend_in_one_call(application, credential_id, token, algorithm, digests, actor,
                                               details, now)
        spent = self._expecting_signatures(token, len(digests), spend)
        meter().activation_tokens("spent")  # committed: counted, and outside the write lock
        try:
            return self.sign_spent(spent, digests, algorithm)
        except Exception:
            self._record_failure(actor, spent.credential.username, details)
            raise

    def _expecting_signatures(self, token: Secret, count: int, spend: Callable[[], Spent]) -> Spent:
        """``spend()``, with the ``count`` signatures it allows expected of the key open in this
        process for the token from before it commits (PackageKeys.expect: so that the key stays
        open till this call signs, whatever other calls of the token do meanwhile); given up if the
        spending fails, or when the credential is not a package."""
        token_hash = activation.token_hash(token.reveal())
        self._package_keys.expect(token_hash, count, self._clock.now() + self._lifetime)
        try:
            spent = spend()
        except BaseException:
            self._package_keys.cancel(token_hash, count)
            raise
        if not spent.credential.is_package:
            self._package_keys.cancel(token_hash, count)
        return spent

    def _spend_in_one_call(self, application: Application, credential_id: str, token: Secret,
                           algorithm: SignatureAlgorithm, digests: list[bytes], actor: str, details: list[dict],
                           now: datetime.datetime) -> Spent:
        """:meth:`sign_hashes`' writes on PostgreSQL: the credential is checked (as this worker
        found it lately, else as read now), then one call of the database's
        ``spend_activation_token`` verifies that it is still so, spends the token and appends the
        records (signserver/signing/spend_call.py): one round trip, two after a read.

        Raises: as :meth:`spend`.
        """
        hashed = activation.token_hash(token.reveal())
        with self._database.statements() as conn:
            found = self._recent_usable(application, credential_id, algorithm, now)
            for _ in range(2):  # as this worker found it, or as read; then as read again
                if found is None:
                    found = self._credentials.read_usable(conn, application, credential_id, now)
                    algorithm.check_key(found[0].key_algorithm)
                credential, newest = found
                # What opening the package takes is read on every call (inside the same call, no
                # round trip), whether or not the key is open here: a key this process opened may
                # still close before this call signs (it expires, or more than MAX_OPEN are open),
                # and must then open again; it cannot be read later, once the last digest erased it.
                open_key = credential.is_package
                try:
                    row = spend_call.spend_and_record(
                        conn, token_hash=hashed, credential_id=credential.id, key_id=credential.key_id,
                        certificate_serial=newest.certificate_serial, application_id=application.id,
                        algorithm=algorithm.hash, digests=digests, open_key=open_key,
                        count_down=credential.is_package,
                        record=spend_call.Record("signature", actor, credential.username, details), now=now)
                    break
                except spend_call.CredentialChanged:
                    # What this worker knew went stale (revoked, renewed, disabled): read it again.
                    self._recent.forget(credential_id)
                    found = None
                except spend_call.DigestsNotTaken:
                    activation.explain_refusal(conn, hashed, credential.id, application.id, algorithm.hash,
                                               [d.hex() for d in digests], 0, now)
            else:
                raise CredentialUnusable(f"credential {credential_id} changed while it was being used; try again")
        self._keep_usable(credential, newest)
        if not open_key:
            return Spent(credential, hashed, None, len(digests))
        try:
            to_open = key_to_open_from(row, token.reveal(), hashed)
        except CredentialUnusable:
            # Spent and recorded already: the records say that nothing was signed.
            self._record_failure(actor, credential.username, details)
            raise
        return Spent(credential, hashed, to_open, len(digests), last=row.unspent <= len(digests))

    def _recent_usable(self, application: Application, credential_id: str, algorithm: SignatureAlgorithm,
                       now: datetime.datetime):
        """The credential and its newest certificate as this worker found them lately, if they pass
        every check again; else None (never a refusal: the caller reads them then)."""
        found = self._recent.get(credential_id)
        if found is None:
            return None
        try:
            self._credentials.check_found(application, found, now)
            algorithm.check_key(found[0].key_algorithm)
        except SignServerError:
            return None
        return found

    def _keep_usable(self, credential: Credential, newest) -> None:
        """Remember the credential as found usable, for PostgreSQL's way to a signature (SQLite's
        reads it in the spending transaction: nothing to spare)."""
        if not self._database.is_sqlite:
            self._recent.keep(credential.id, (credential, NewestCertificate(
                newest.certificate_serial, newest.certificate_status, newest.certificate_not_after)))

    def _record_failure(self, actor: str, username: str, details: list[dict]) -> None:
        with self._database.transaction() as conn:
            self._audit.append_many(conn, self._clock.now(), "signature.failed", actor, username, details)

    def _rewrap_if_stale(self, key_id: str) -> None:
        """Move the package under the active master key on its use; a failure (the key not yet
        on this node's token, say) leaves it to the background pass and costs the holder nothing."""
        try:
            self._packages.rewrap_if_stale(key_id)
        except SignServerError as exc:
            log.warning("package %s stays under its master key for now: %s", key_id, exc)

    def sign_spent(self, spent: Spent, digests: list[bytes], algorithm: SignatureAlgorithm) -> list[bytes]:
        """Sign the digests a token was spent on (:meth:`spend`) with the credential's key: a
        package is unwrapped in the HSM from what the token carried, or found open in this process.

        A package that moved under another master key since the token was spent (the re-wrap
        pass, then the old key's retirement) is opened as it is wrapped now.

        Raises: CredentialUnusable (also: the key closed here between the spending and the
            signature, a rare race: authorise again), UnsupportedAlgorithm, KeyNotFound (a key
            that is not a package), HsmUnavailable (MASTER_KEY_MISSING: this token lacks the
            package's master key; logged with its label), DataCorrupted, HsmError. The signatures
            not made are then no longer expected of the key (see :meth:`spend`).
        """
        if not spent.credential.is_package:
            self._credentials.refuse_infrastructure_key(spent.credential)
            return [self._keys.sign_digest(spent.credential.key_id, d, algorithm) for d in digests]
        try:
            return self._sign_package(spent, digests, algorithm)
        except BaseException as failure:
            self._package_keys.cancel(spent.token_hash, len(digests), last=spent.last)
            if isinstance(failure, KeyNotOpen):
                raise CredentialUnusable("the holder's key closed in this process before it signed; authorise "
                                         "again") from None
            if isinstance(failure, KeyNotFound):
                log.warning("signing with package %s of credential %s failed: %s", spent.credential.key_id,
                            spent.credential.id, failure)
                raise HsmUnavailable(MASTER_KEY_MISSING) from None
            raise

    def _sign_package(self, spent: Spent, digests: list[bytes], algorithm: SignatureAlgorithm) -> list[bytes]:
        """:meth:`sign_spent` for a package; once more as it is wrapped now when the master key read
        at the spending is not on the token. Raises: as :meth:`sign_spent`, KeyNotFound (the master
        key) and KeyNotOpen untranslated."""
        try:
            return self._package_keys.sign(spent.token_hash, digests, algorithm, self._clock.now(), spent.to_open,
                                           last=spent.last)
        except KeyNotFound:
            # Only a master key is looked up here; the key is not open (it would need none).
            moved = as_wrapped_now(self._database, spent.credential.key_id, spent.to_open) if spent.to_open else None
            if moved is None:
                raise
        return self._package_keys.sign(spent.token_hash, digests, algorithm, self._clock.now(), moved,
                                       last=spent.last)

    @contextlib.contextmanager
    def signing(self, spent: Spent) -> Iterator[Callable[[bytes, SignatureAlgorithm], bytes]]:
        """For the block, a function that signs one digest at a time as the token's spending
        allows (:meth:`sign_spent`): for the documents, whose signatures pyHanko asks for one by
        one. Those of ``spent.signatures`` it was not asked for when the block ends (a document
        that failed before its signature) are no longer expected of the key, which then closes
        with its token rather than after the token's expiry.

        The function raises: as :meth:`sign_spent`.
        """
        asked = 0

        def sign(digest: bytes, algorithm: SignatureAlgorithm) -> bytes:
            nonlocal asked
            asked += 1  # made or, failing, given up by sign_spent itself
            return self.sign_spent(spent, [digest], algorithm)[0]
        try:
            yield sign
        finally:
            if spent.credential.is_package and asked < spent.signatures:
                self._package_keys.cancel(spent.token_hash, spent.signatures - asked, last=spent.last)

    def spend(self, application: Application, credential_id: str, token: Secret, hash_algorithm: HashAlgorithm,
              digests: list[bytes], key_check=None) -> Spent:
        """Spend ``digests`` of an activation token for the credential, atomically; for a package
        credential, take (in the same transaction) what unwrapping it takes, unless its key is open
        in this process, and erase what the token carries once its last digest is spent. The key
        stays open here for the signatures the spending allows (:meth:`sign_spent`, or
        :meth:`signing`, which gives up those it was not asked for).

        Raises: InvalidArgument (no digest, a digest twice, too many, or of the wrong length: as
            :meth:`authorize`, so that nothing is ever spent of no digest), ActivationRefused,
            NotFound, CredentialUnusable, UnsupportedAlgorithm (key_check).
        """
        activation.check_digests(digests, hash_algorithm, self.max_signatures)
        now = self._clock.now()

        def spend() -> Spent:
            with self._database.transaction() as conn:
                return self._spend_in(conn, application, credential_id, token, hash_algorithm, digests, key_check,
                                      now)
        spent = self._expecting_signatures(token, len(digests), spend)
        meter().activation_tokens("spent")  # committed: counted, and outside the write lock
        return spent

    def _spend_in(self, conn, application: Application, credential_id: str, token: Secret,
                  hash_algorithm: HashAlgorithm, digests: list[bytes], key_check, now: datetime.datetime) -> Spent:
        """:meth:`spend` in the caller's transaction. Raises: as :meth:`spend`."""
        hashed = activation.token_hash(token.reveal())
        to_open = None
        credential = self._credentials.usable_in(application, credential_id, conn, now)
        if key_check is not None:
            key_check(credential.key_algorithm)
        activation.consume(conn, token=token.reveal(), credential_id=credential.id,
                           application_id=application.id, algorithm=hash_algorithm, digests=digests, now=now)
        if not credential.is_package:
            return Spent(credential, hashed, None, len(digests))
        if not self._package_keys.is_open(hashed, now):
            to_open = self._packages.key_to_open(conn, credential.id, credential.key_id, token.reveal(), hashed)
        unspent = activation.count_spent(conn, hashed, len(digests))
        return Spent(credential, hashed, to_open, len(digests), last=unspent <= 0)

    def forget_expired_tokens(self) -> int:
        """Erase the keys sealed to every activation token expired by now that still carries one,
        in transactions of at most FORGET_BATCH tokens (the write lock held only moments). Nothing
        is remembered between calls: a token a failed call left (or a process that stopped) is
        erased by the next. Returns how many.

        Raises: StoreUnavailable, StoreConflict (the batches committed before stay erased)."""
        now = self._clock.now()
        erased = 0
        while True:
            with self._database.transaction() as conn:
                batch = activation.forget_sealed_keys(conn, now, FORGET_BATCH)
            erased += batch
            if batch:
                meter().activation_tokens("expired", batch)
            if batch < FORGET_BATCH:
                return erased

