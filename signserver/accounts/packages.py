"""SigningPackages: holders' keys kept in the database as signing data packages.

A package holds what the token handed out (signserver/hsm/packages.py): the public key, the
package key wrapped by a master key, and the private key wrapped by the package key, sealed to the
holder (signserver/accounts/holder_seal.py). So signing needs both the HSM (to unwrap) and the
holder (to unseal): the database with the token's PIN but without the holder's password or
recovery code signs nothing.

Authorize opens the holder's package with the seal key the holder's password unlocked, and hands
the wrapped private key on, sealed under a key derived from the activation token; whichever worker
is given the token unwraps it in the HSM to sign.
"""

from __future__ import annotations

import datetime
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from signserver.accounts import holder_seal
from signserver.clock import Clock, epoch_seconds
from signserver.errors import (
    AlreadyExists,
    ConfigurationError,
    CredentialUnusable,
    DataCorrupted,
    HsmOperationFailed,
    KeyNotFound,
    NotFound,
)
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.master_keys import MasterKeyInfo, MasterKeys, master_label
from signserver.hsm.packages import KeyToOpen, PackageKeys
from signserver.store.database import Database
from signserver.store.schema import accounts, activation_tokens, master_keys, signing_packages

log = logging.getLogger(__name__)

PACKAGE = "package"  # credentials.key_store of a package credential
PACKAGE_NOT_AVAILABLE = ("the credential's signing data package is not available to this activation token; "
                         "authorise again")


def key_to_open_from(row, token: str, token_hash: str) -> KeyToOpen:
    """What unwrapping a package takes, from what the database keeps of it for an activation token
    (``row``: the token's ``sealed_key`` and ``expires_at``, the package's
    ``algorithm``, ``wrapped_package_key``, ``master_label`` and ``mechanism``).

    Raises: CredentialUnusable: the token does not open what it carries.
    """
    try:
        wrapped_private = holder_seal.unlock(holder_seal.token_key(token), row.sealed_key, token_hash.encode("ascii"))
    except DataCorrupted:
        raise CredentialUnusable("the activation token does not open its signing data package") from None
    return KeyToOpen(handle_id=token_hash, algorithm=KeyAlgorithm(row.algorithm), wrapped_private=wrapped_private,
                     wrapped_package_key=row.wrapped_package_key, master_label=row.master_label,
                     mechanism=row.mechanism,
                     expires_at=datetime.datetime.fromtimestamp(row.expires_at, datetime.timezone.utc))


@dataclass(frozen=True)
class SealKey:
    """An account's seal key pair as stored: the public half, and the private half sealed."""

    public: bytes
    by_password: bytes
    by_recovery: bytes | None


def new_seal_key(username: str, password_key: bytes, recovery_key: bytes | None) -> tuple[bytes, SealKey]:
    """A new seal key pair for the account: (the private half, what is stored)."""
    private, public = holder_seal.new_seal_key()
    return private, seal_key_values(username, private, public, password_key, recovery_key)


def seal_key_values(username: str, private: bytes, public: bytes, password_key: bytes,
                    recovery_key: bytes | None) -> SealKey:
    """The seal key's private half locked under the password's key (and the recovery code's)."""
    return SealKey(public=public,
                   by_password=holder_seal.lock(password_key, private, _seal_context("password", username)),
                   by_recovery=(seal_key_by_recovery(username, private, recovery_key)
                                if recovery_key is not None else None))


# seal_key_by_recovery as made now: this byte, the recovery code's public key (holder_seal.key_pair_from),
# and the seal key's private half sealed to it. Values made before start with holder_seal's lock
# version (0x01): the private half locked under the code's key itself, which only the code renews.
_SEALED_FOR_CODE = b"\x02"


def seal_key_by_recovery(username: str, private: bytes, recovery_key: bytes) -> bytes:
    """The seal key's private half sealed for the recovery code (to the key pair its key stands for)."""
    return _sealed_for_code(username, private, holder_seal.key_pair_from(recovery_key)[1])


def seal_key_for_same_code(username: str, private: bytes, by_recovery: bytes | None) -> bytes | None:
    """A new seal key's private half sealed for the recovery code that ``by_recovery`` (the
    account's value) was sealed for, without the code; None when the account has no such value
    (no code, or one whose value was made before codes had a public key: only the code renews it)."""
    if by_recovery is None or by_recovery[:1] != _SEALED_FOR_CODE:
        return None
    return _sealed_for_code(username, private, by_recovery[1:33])


def _sealed_for_code(username: str, private: bytes, code_public: bytes) -> bytes:
    return _SEALED_FOR_CODE + code_public + holder_seal.seal_to(code_public, private,
                                                                _seal_context("recovery", username))


def open_seal_key(username: str, sealed: bytes, key: bytes, by: str) -> bytes:
    """The seal key's private half, unlocked with the key derived from the password or the
    recovery code (``by``: "password" or "recovery").

    Raises: DataCorrupted: the value does not open with that key, or belongs to another account.
    """
    context = _seal_context(by, username)
    if by == "recovery" and sealed[:1] == _SEALED_FOR_CODE:
        code_private, code_public = holder_seal.key_pair_from(key)
        if sealed[1:33] != code_public:
            raise DataCorrupted("a sealed value does not open with this key")
        return holder_seal.open_sealed(code_private, sealed[33:], context)
    return holder_seal.unlock(key, sealed, context)


def seal_columns(seal: SealKey) -> dict:
    return {"seal_public_key": seal.public, "seal_key_by_password": seal.by_password,
            "seal_key_by_recovery": seal.by_recovery}


class SigningPackages:
    def __init__(self, database: Database, keys: PackageKeys, masters: MasterKeys, clock: Clock):
        self._database = database
        self._keys = keys
        self._masters = masters
        self._clock = clock

    # --- master keys --------------------------------------------------------------------

    def ensure_master(self) -> MasterKeyInfo:
        """The active master key: made on the first start, and on every start checked to be on
        this token (the same key: the same check value).

        Raises: ConfigurationError: the token lacks the active master key or holds another of its
            label (copy it with the key ceremony). HsmError.
        """
        with self._database.read() as conn:
            row = conn.execute(select(master_keys).where(master_keys.c.state == "active")).first()
        if row is None:
            return self._first_master()
        try:
            info = self._masters.describe(row.label)
        except KeyNotFound as missing:
            raise ConfigurationError("hsm.token_label", str(missing)) from None
        if info.check_value != row.check_value or not info.check_value:
            raise ConfigurationError(
                "hsm.token_label", f"the master key {row.label!r} on this token is not the one the database knows (check value "
                f"{info.check_value or 'unknown'}, expected {row.check_value}): copy the right key with the "
                "key ceremony")
        return info

    def active_master(self, conn: Connection) -> str:
        """The active master key's label. Raises: NotFound: none yet."""
        label = conn.execute(select(master_keys.c.label).where(master_keys.c.state == "active")).scalar()
        if label is None:
            raise NotFound("no master key yet: start the server once to create it")
        return label

    def _first_master(self) -> MasterKeyInfo:
        # That module imports this one: imported here.
        from signserver.accounts.master_rotation import creating_master_key, lock_master_keys

        label = master_label(1)
        # Under the lock every maker of a master key holds (rotations too): two processes starting
        # at once on a new database would both find no key and both make one labelled 1.
        with creating_master_key(self._database) as creation:
            with creation.reading() as conn:
                active = conn.execute(select(master_keys.c.label).where(master_keys.c.state == "active")).scalar()
                recorded = conn.execute(select(func.count()).select_from(master_keys)).scalar()
            if active is None and recorded:
                raise ConfigurationError("database.url", "the database records master keys but none is active: "
                                         "see `signserver hsm master status`")
            if active is None:
                try:
                    info = self._masters.create(label)
                except AlreadyExists:  # an earlier start stopped before recording it (or the key ceremony copied it)
                    info = self._masters.describe(label)
                with creation.recording() as conn:
                    lock_master_keys(conn)
                    conn.execute(insert(master_keys).values(label=label, check_value=info.check_value,
                                                            state="active",
                                                            created_at=epoch_seconds(self._clock.now())))
                return info
        return self.ensure_master()  # another process made it meanwhile: checked on this token as on a start

    # --- packages -----------------------------------------------------------------------

    def make(self, username: str, seal_public: bytes, algorithm: KeyAlgorithm) -> dict:
        """Generate a holder key in the HSM and return the signing_packages row that keeps it,
        sealed to the account's seal key (insert it with :func:`insert_package`). The first master
        key is made here when no start made it yet.

        Raises: UnsupportedAlgorithm, HsmError.
        """
        with self._database.read() as conn:
            master = conn.execute(select(master_keys.c.label).where(master_keys.c.state == "active")).scalar()
        wrapped = self._keys.make(algorithm, master or self._first_master().label)
        key_id = secrets.token_hex(16)
        return {"key_id": key_id, "algorithm": algorithm.value, "public_key": wrapped.public_key_der,
                "master_label": wrapped.master_label, "mechanism": wrapped.mechanism,
                "wrapped_package_key": wrapped.wrapped_package_key,
                "sealed_private_key": holder_seal.seal_to(seal_public, wrapped.wrapped_private,
                                                          package_context(key_id, username)),
                "created_at": epoch_seconds(self._clock.now())}

    def public_key_der(self, key_id: str) -> bytes:
        """Raises: KeyNotFound."""
        with self._database.read() as conn:
            public = conn.execute(select(signing_packages.c.public_key)
                                  .where(signing_packages.c.key_id == key_id)).scalar()
        if public is None:
            raise KeyNotFound(f"no signing data package {key_id}")
        return public

    def open(self, conn: Connection, key_id: str, username: str, seal_private: bytes) -> bytes:
        """The wrapped private key of the package, unsealed with the holder's seal key.

        Raises: CredentialUnusable: the package was destroyed, or does not open for this holder
            (sealed to a seal key the holder no longer has, or copied from another account).
        """
        row = conn.execute(select(signing_packages.c.sealed_private_key)
                           .where(signing_packages.c.key_id == key_id)).first()
        if row is None or row.sealed_private_key is None:
            raise CredentialUnusable("the credential's signing data package was destroyed; it can no longer sign")
        try:
            return holder_seal.open_sealed(seal_private, row.sealed_private_key, package_context(key_id, username))
        except DataCorrupted:
            log.warning("the signing data package %s does not open with the seal key of %s", key_id, username)
            raise CredentialUnusable("the credential's signing data package does not open with the holder's "
                                     "secrets; the RA must revoke it and issue a new one") from None

    def seal_for_token(self, wrapped_private: bytes, token: str, token_hash: str) -> bytes:
        """The wrapped private key sealed under the activation token (stored with the token)."""
        return holder_seal.lock(holder_seal.token_key(token), wrapped_private, token_hash.encode("ascii"))

    def key_to_open(self, conn: Connection, credential_id: str, key_id: str, token: str,
                    token_hash: str) -> KeyToOpen:
        """What unwrapping the package for this activation token takes (read, in the transaction
        that spends the token, on a worker where it is not open yet).

        Raises: CredentialUnusable: the token carries no package (spent, revoked or expired), the
            package was destroyed, or the token does not open it.
        """
        row = conn.execute(
            select(activation_tokens.c.sealed_key, activation_tokens.c.expires_at, signing_packages)
            .join(signing_packages, signing_packages.c.key_id == key_id)
            .where(activation_tokens.c.token_hash == token_hash,
                   activation_tokens.c.credential_id == credential_id)).first()
        if row is None or row.sealed_key is None or row.wrapped_package_key is None:
            raise CredentialUnusable(PACKAGE_NOT_AVAILABLE)
        return key_to_open_from(row, token, token_hash)

    def rewrap_if_stale(self, key_id: str) -> bool:
        """Re-wrap the package's key under the active master key if another wraps it.

        Returns whether it was re-wrapped. Raises: KeyNotFound (a master key is not on the
        token), DataCorrupted, HsmError.
        """
        with self._database.read() as conn:
            active = self.active_master(conn)
            row = conn.execute(select(signing_packages).where(signing_packages.c.key_id == key_id)).first()
        if row is None or row.wrapped_package_key is None or row.master_label == active:
            return False
        rewrapped = self._keys.rewrap(row.wrapped_package_key, row.mechanism, row.master_label, active)
        with self._database.transaction() as conn:
            # Only over the value read: a concurrent re-wrap of the same package wins once, and a
            # package destroyed meanwhile (revocation) stays destroyed.
            return conn.execute(update(signing_packages).where(
                signing_packages.c.key_id == key_id, signing_packages.c.master_label == row.master_label,
                signing_packages.c.wrapped_package_key == row.wrapped_package_key)
                .values(wrapped_package_key=rewrapped, master_label=active)).rowcount == 1

    def destroy(self, conn: Connection, key_id: str) -> None:
        """Make the package unusable for good: its wrapped keys are erased (revocation)."""
        conn.execute(update(signing_packages).where(signing_packages.c.key_id == key_id)
                     .values(wrapped_package_key=None, sealed_private_key=None))


def insert_package(conn: Connection, row: dict) -> None:
    """Store a package made by :meth:`SigningPackages.make`.

    Raises: HsmOperationFailed: its master key was retired meanwhile (a rotation finished while
        it was made): nothing is stored; make it again.
    """
    # Read under a share lock (PostgreSQL): a retirement of the key, which locks its row before it
    # counts the packages that need it, waits for this to commit and then counts it, or commits
    # first and is seen here.
    state = conn.execute(select(master_keys.c.state).where(master_keys.c.label == row["master_label"])
                         .with_for_update(read=True)).scalar()
    if state == "retired":
        raise HsmOperationFailed(f"the master key {row['master_label']!r} was retired while a key was made under "
                                 "it; try again")
    conn.execute(insert(signing_packages).values(**row))


def package_context(key_id: str, username: str) -> bytes:
    """What a package's sealed private key is bound to: the package and its holder's account."""
    return f"signing data package|{key_id}|{username}".encode("utf-8")


def _seal_context(by: str, username: str) -> bytes:
    return f"seal key|{by}|{username}".encode("utf-8")


def account_seal(conn: Connection, account_id: int, for_share: bool = False):
    """The account's seal key columns (public, by_password, by_recovery), or None.

    ``for_share``: read under a share lock (PostgreSQL; SQLite's writers run one at a time), for a
    transaction that stores what was sealed to the key read: a change of the seal key (which locks
    the row first, then re-seals the account's packages) waits for it to commit and then finds its
    package, or committed first and is seen here."""
    query = select(accounts.c.seal_public_key, accounts.c.seal_key_by_password,
                   accounts.c.seal_key_by_recovery).where(accounts.c.id == account_id)
    return conn.execute(query.with_for_update(read=True) if for_share else query).first()
