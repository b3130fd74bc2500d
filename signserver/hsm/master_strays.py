"""Keys on the token under a master key's label that are not the master key the database records
there: a key a rotation on this token made and never recorded, when a rotation on another token
of the service took the label and recorded its own key. No package can be opened with such a key
(every package names the key the database records), and the key ceremony refuses to store the
recorded key beside it.

For administrators (``signserver hsm master retire --orphans``), not for request paths: it
searches the token.
"""

from __future__ import annotations

import logging

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, ObjectClass

from signserver.hsm.master_keys import master_check_value
from signserver.hsm.session import TokenSession

log = logging.getLogger(__name__)


def destroy_unlike(session: TokenSession, label: str, check_value: str) -> int:
    """Destroy every secret key labelled ``label`` whose check value is not ``check_value`` (the
    one the database records), each checked as it is destroyed: a copy of the recorded key stored
    meanwhile (by the key ceremony) stays. Returns how many were destroyed.

    Raises: HsmError.
    """
    def destroy(s: pkcs11.Session) -> int:
        destroyed = 0
        for key in session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}):
            try:
                value = master_check_value(s, key)
            except p11.PKCS11Error:  # a key that cannot wrap nor has a check value: not the recorded key
                value = ""
            if value != check_value:
                key.destroy()
                destroyed += 1
                log.info("destroyed a key labelled %s with the check value %s, not the recorded %s", label,
                         value or "unknown", check_value)
        # MasterKeys keeps the handle it found under this name (signserver/hsm/master_keys.py): it may
        # be one just destroyed, so it is searched for again.
        session.cache.pop(("master", label), None)
        return destroyed

    return session.run(destroy, f"destroy the keys labelled {label!r} that are not the recorded one")
