"""A package that moved under another master key while a call was between spending its token and
signing.

What opening a package takes is read when the token is spent (HashSigner.spend): the package
key as one master key wraps it, and that key's label. The re-wrap pass (or another call's
Authorize) may move the package under the active master key before the call signs, and the
retirement that follows destroys the old key on the token: the call then finds no key under the
label it read. The package key itself is the same under either master key, and the token's
sealed copy of the private key is wrapped by the package key alone, so the call opens the
package as it is wrapped now.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from signserver.hsm.packages import KeyToOpen
from signserver.store.database import Database
from signserver.store.schema import signing_packages


def as_wrapped_now(database: Database, key_id: str, to_open: KeyToOpen) -> KeyToOpen | None:
    """``to_open`` with the package key as the package ``key_id`` keeps it now, when another
    master key than ``to_open``'s wraps it; None when it has not moved (or was destroyed).

    Raises: StoreUnavailable.
    """
    with database.read() as conn:
        row = conn.execute(select(signing_packages.c.wrapped_package_key, signing_packages.c.master_label)
                           .where(signing_packages.c.key_id == key_id)).first()
    if row is None or row.wrapped_package_key is None or row.master_label == to_open.master_label:
        return None
    return dataclasses.replace(to_open, wrapped_package_key=row.wrapped_package_key, master_label=row.master_label)
