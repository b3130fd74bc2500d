"""SQL for accounts, their e-mail addresses and credentials; every function takes a connection,
so callers put several of them in one transaction."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Collection
from typing import Callable

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from signserver.accounts.lockout import lock_state
from signserver.accounts.model import Account, AccountKind, AccountStatus, Credential
from signserver.clock import epoch_seconds, from_epoch
from signserver.errors import AlreadyExists, NotFound
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.store.schema import account_emails, accounts, credentials, name_lockouts


def _account(row, lock_row, emails: tuple[str, ...], now: datetime.datetime) -> Account:
    """An Account from its row and the ``name_lockouts`` row of its name (None: no run)."""
    lock = lock_state(lock_row, epoch_seconds(now))
    locked_until = lock.locked_until
    if row.status == AccountStatus.DISABLED.value:
        status = AccountStatus.DISABLED
    elif locked_until is not None:
        status = AccountStatus.LOCKED
    else:
        status = AccountStatus.ACTIVE
    return Account(
        id=row.id, username=row.username, holder_name=row.holder_name, emails=emails,
        kind=AccountKind(row.kind), organisation=row.organisation, department=row.department,
        title=row.title, status=status, locked_until=locked_until,
        failed_attempts=lock.failed_attempts,
        password_changed_at=from_epoch(row.password_changed_at), created_at=from_epoch(row.created_at),
        given_name=row.given_name, surname=row.surname,
    )


def _emails(conn: Connection, account_id: int) -> tuple[str, ...]:
    rows = conn.execute(select(account_emails.c.address).where(account_emails.c.account_id == account_id)
                        .order_by(account_emails.c.position))
    return tuple(r.address for r in rows)


def account_row(conn: Connection, username: str):
    """The raw row (with hashes and the sealed seed), or None."""
    return conn.execute(select(accounts).where(accounts.c.username == username)).first()


def _current_runs(now: datetime.datetime):
    """The runs of failures not yet forgotten (kept by the names' keyed hashes: see lockout.py)."""
    return select(name_lockouts).where(name_lockouts.c.forget_at > epoch_seconds(now))


def get_account(conn: Connection, username: str, now: datetime.datetime, name_key: str | None = None) -> Account:
    """The account, with the lockout state of its name when ``name_key`` (NameKeys.key_of of the
    username) is given; without it, as if no run of failures were on (status active or disabled).

    Raises: NotFound: no such account."""
    row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
    if row is None:
        raise NotFound(f"no account {username!r}")
    lock_row = None if name_key is None else conn.execute(
        _current_runs(now).where(name_lockouts.c.name_key == name_key)).first()
    return _account(row, lock_row, _emails(conn, row.id), now)


def account_ids(conn: Connection, usernames: Collection[str]) -> tuple[int, ...]:
    """The ids of the accounts of these names; a name with no account is passed over."""
    return tuple(conn.execute(select(accounts.c.id).where(accounts.c.username.in_(list(usernames)))).scalars())


def list_accounts(conn: Connection, now: datetime.datetime, key_of: Callable[[str], str]) -> list[Account]:
    """Every account with the lockout state of its name; ``key_of``: NameKeys.hasher()."""
    rows = conn.execute(select(accounts).order_by(accounts.c.username)).all()
    # The table holds only the names tried in the last lock's duration: read whole, matched here.
    runs = {r.name_key: r for r in conn.execute(_current_runs(now))}
    return [_account(r, runs.get(key_of(r.username)), _emails(conn, r.id), now) for r in rows]


def insert_account(conn: Connection, *, username: str, holder_name: str, emails: tuple[str, ...],
                   kind: AccountKind, organisation: str, department: str, title: str, password_hash: str,
                   otp_seed_sealed: bytes, recovery_code_hash: str, revocation_phrase_hash: str | None,
                   now: datetime.datetime, name_key: str, given_name: str = "", surname: str = "",
                   **seal_and_keys) -> int:
    """``seal_and_keys``: the key algorithm and the seal key's columns (see accounts.packages);
    ``name_key``: NameKeys.key_of the username.

    Raises: AlreadyExists: the username is taken."""
    if account_row(conn, username) is not None:
        raise AlreadyExists(f"an account {username!r} already exists")
    result = conn.execute(insert(accounts).values(
        username=username, holder_name=holder_name, kind=kind.value, organisation=organisation,
        department=department, title=title, given_name=given_name, surname=surname,
        status=AccountStatus.ACTIVE.value, password_hash=password_hash,
        password_changed_at=epoch_seconds(now), otp_seed_sealed=otp_seed_sealed,
        recovery_code_hash=recovery_code_hash, revocation_phrase_hash=revocation_phrase_hash,
        created_at=epoch_seconds(now), **seal_and_keys))
    account_id = result.inserted_primary_key[0]
    # Failures of the name before the account existed are nobody's: the account starts afresh.
    conn.execute(delete(name_lockouts).where(name_lockouts.c.name_key == name_key))
    conn.execute(insert(account_emails), [{"account_id": account_id, "position": i, "address": a}
                                          for i, a in enumerate(emails)])
    return account_id


def update_account(conn: Connection, account_id: int, **values) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def credential_from_row(row) -> Credential:
    """A Credential from a row of :data:`CREDENTIAL_COLUMNS`."""
    return Credential(id=row.id, account_id=row.account_id, username=row.username, key_id=row.key_id,
                      key_algorithm=KeyAlgorithm(row.key_algorithm), status=row.status,
                      description=row.description, created_at=from_epoch(row.created_at), key_store=row.key_store)


CREDENTIAL_COLUMNS = (credentials, accounts.c.username)


def insert_credential(conn: Connection, account_id: int, key_id: str, algorithm: KeyAlgorithm,
                      description: str, now: datetime.datetime, key_store: str = "token") -> str:
    """``key_store``: "package" (key_id names a signing data package) or "token" (a key on the token)."""
    credential_id = secrets.token_hex(8)
    conn.execute(insert(credentials).values(id=credential_id, account_id=account_id, key_id=key_id,
                                            key_store=key_store,
                                            key_algorithm=algorithm.value, status="active",
                                            description=description, created_at=epoch_seconds(now)))
    return credential_id


# Built once: this lookup is on the way to every signature.
_CREDENTIAL_BY_ID = select(*CREDENTIAL_COLUMNS).join(accounts).where(credentials.c.id == bindparam("id"))


def get_credential(conn: Connection, credential_id: str) -> Credential:
    """Raises: NotFound: no such credential."""
    row = conn.execute(_CREDENTIAL_BY_ID, {"id": credential_id}).first()
    if row is None:
        raise NotFound(f"no credential {credential_id!r}")
    return credential_from_row(row)


def credentials_of(conn: Connection, account_id: int) -> list[Credential]:
    rows = conn.execute(select(*CREDENTIAL_COLUMNS).join(accounts)
                        .where(credentials.c.account_id == account_id).order_by(credentials.c.created_at))
    return [credential_from_row(r) for r in rows]


def credentials_of_name(conn: Connection, username: str) -> list[Credential]:
    """The credentials of the account of that name, oldest first (none for an unknown name)."""
    rows = conn.execute(select(*CREDENTIAL_COLUMNS).join(accounts).where(accounts.c.username == username)
                        .order_by(credentials.c.created_at))
    return [credential_from_row(r) for r in rows]


def delete_account_emails(conn: Connection, account_id: int) -> None:
    conn.execute(delete(account_emails).where(account_emails.c.account_id == account_id))
