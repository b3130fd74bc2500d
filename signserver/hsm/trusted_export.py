"""Shared secret keys that may leave the token only wrapped under a key its security officer
trusts (CKA_WRAP_WITH_TRUSTED): master keys and OTP sealing keys, which the key ceremony copies
to the other tokens of a service.

A token that does not know the attribute (openCryptoki 3.8's soft token answers
CKR_ATTRIBUTE_TYPE_INVALID) cannot restrict a key's export that way; an extractable key there
could be wrapped out under any key the token's user makes, so such keys are made not extractable
at all, and the ceremony cannot copy them (said once per process in the log).
"""

from __future__ import annotations

import logging
import os

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, KeyType, Mechanism

from signserver.hsm.new_objects import make_intact

log = logging.getLogger(__name__)

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log ``message`` at warning level the first time this process meets it."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def generate_shared_key(session: pkcs11.Session, key_type: KeyType, bits: int, label: str, template: dict,
                        what: str, mechanism: Mechanism | None = None) -> pkcs11.SecretKey:
    """A token key under ``template`` (which sets CKA_WRAP_WITH_TRUSTED); on a token that does not
    know that attribute, the same key not extractable at all. ``what`` names the keys in the log
    ("master keys").

    Raises: HsmOperationFailed: the token lost the key's id and label in each attempt (see
        signserver/hsm/new_objects.py). pkcs11.PKCS11Error, which :meth:`TokenSession.run` translates.
    """
    key_id = os.urandom(16)

    def make() -> tuple[pkcs11.SecretKey]:
        try:
            return (session.generate_key(key_type, bits, label=label, id=key_id, store=True,
                                         template=dict(template), mechanism=mechanism),)
        except p11.AttributeTypeInvalid:
            warn_once(f"the token does not know CKA_WRAP_WITH_TRUSTED, so it cannot restrict a key's export to keys "
                      f"its security officer trusts: {what} made on it are not extractable at all, and the key "
                      "ceremony cannot copy them to another token")
        kept = {a: v for a, v in template.items() if a is not Attribute.WRAP_WITH_TRUSTED}
        return (session.generate_key(key_type, bits, label=label, id=key_id, store=True,
                                     template={**kept, Attribute.EXTRACTABLE: False}, mechanism=mechanism),)

    key, = make_intact(make, key_id, label, f"the {key_type.name} key")
    return key
