"""A new seal key whenever a secret that opens the holder's seal key is given up.

A password change, a replaced recovery code and an unlock with the recovery code each leave a
secret behind (the old password, the replaced or spent code) that opened the seal key as it was.
Locking the same seal key under the new secret would leave that secret good against an older copy
of the database (a backup): the old secret opens the seal key kept there, and the seal key opens
the holder's packages in the live database. So each of these events makes a new seal key pair,
re-seals every live package of the account from the old seal key (which the secret just given
opened) to the new one, and locks the new private half under what opens it now, in one
transaction, guarded by what was checked. An old secret then opens, in a backup, only an old seal
key that no live package is sealed to.

The recovery code's hold on the seal key survives a password change, at which the server has the
password but not the code: the code's key stands for an X25519 key pair whose public half is kept
beside the sealed value (signserver/accounts/packages.py, seal_key_by_recovery), so the new seal
key is sealed for the code without it. Checking a secret still costs one argon2id evaluation,
which yields the key (for the password, or for the code's key pair) and the verifier alike. (A
per-account key locked under both secrets would not do: the old password opens it in a backup,
and a new one could not be locked for the code.) A value made before the code had a public key
(a code given before this form) is locked under the code's key itself: a password change cannot
renew it, so it is dropped there, and the code then unlocks the account but opens no key, as after
an operator's set_password, until the holder replaces the code.

A package sealed to the old seal key but recorded after the change (an issuance that raced it) is
refused by its recording transaction, which reads the account's seal key under a share lock
(signserver.ca.issuance); a package that does not open with the old seal key (sealed to one a
reset replaced: its credential was disabled then) is left as it is.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from signserver.accounts import holder_seal
from signserver.accounts.packages import PACKAGE, package_context
from signserver.errors import DataCorrupted
from signserver.store.schema import credentials, signing_packages


def reseal_packages(conn: Connection, account_id: int, username: str, old_private: bytes, new_public: bytes) -> int:
    """In the caller's transaction, after it stored the account's new seal key: re-seal the
    account's live packages from ``old_private`` to ``new_public``; returns how many.

    Each package is written only over the value read: one destroyed meanwhile (a revocation)
    stays destroyed.
    """
    rows = conn.execute(select(signing_packages.c.key_id, signing_packages.c.sealed_private_key)
                        .join(credentials, credentials.c.key_id == signing_packages.c.key_id)
                        .where(credentials.c.account_id == account_id, credentials.c.key_store == PACKAGE,
                               signing_packages.c.sealed_private_key.is_not(None))).all()
    resealed = 0
    for row in rows:
        context = package_context(row.key_id, username)
        try:
            wrapped_private = holder_seal.open_sealed(old_private, row.sealed_private_key, context)
        except DataCorrupted:  # sealed to a seal key an earlier reset replaced: nobody opens it
            continue
        resealed += conn.execute(update(signing_packages).where(
            signing_packages.c.key_id == row.key_id,
            signing_packages.c.sealed_private_key == row.sealed_private_key)
            .values(sealed_private_key=holder_seal.seal_to(new_public, wrapped_private, context))).rowcount
    return resealed
