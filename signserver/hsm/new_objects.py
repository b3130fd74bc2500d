"""Token objects checked as they are made, before anything uses them.

A process reading SoftHSM's file token while another makes an object on it can spoil the new
object: it loses its id and label, though the call that made it succeeded, and no search finds
it again (signserver/hsm/token_files.py says how). Measured on this machine class, beside one
process searching the token and reading what it found without pause: 15 of 553 P-256 pairs (their
public halves) and 99 of 1,193 AES keys were so spoiled, and a few generations failed outright
(CKR_FUNCTION_FAILED). A spoiled key is lost: a CA key whose certificate can then not be made, a
sealing key the other workers cannot find.

signserver's own processes take turns through the token files' lock, and so never spoil each
other's keys. Other programs reading the token do not take it, so the maker also reads what it
made through the handles it holds (no search: that would walk the whole token) and makes it again
when spoiled. That check sees most spoils, not all: a reader's write can land a moment after it.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute

from signserver.errors import HsmOperationFailed
from signserver.hsm.token_files import hold_token_files

log = logging.getLogger(__name__)

# Each attempt is spoiled only when another process searched the token during it.
MAKE_ATTEMPTS = 5


def make_intact(make: Callable[[], Sequence[pkcs11.Object]], key_id: bytes, label: str,
                what: str) -> Sequence[pkcs11.Object]:
    """Call ``make`` until every token object it returns carries ``key_id`` and ``label``, destroying
    what a spoiled attempt made, and return those objects. ``make`` makes them (a key pair by
    generation, a key by unwrapping, a certificate) under that id and label; ``what`` names them in
    the log ("the P-256 key pair"). Call inside :func:`signserver.hsm.module.pkcs11_calls` (as
    :meth:`TokenSession.run` does): the token files' lock is held from here to its end.

    Raises:
        HsmOperationFailed: every attempt was spoiled.
        pkcs11.PKCS11Error: from ``make`` (CKR_FUNCTION_FAILED only on the last attempt), which
            :meth:`TokenSession.run` translates.
    """
    hold_token_files()
    for attempt in range(1, MAKE_ATTEMPTS + 1):
        try:
            made = make()
        except p11.FunctionFailed:
            # What a generation raises when the other process's search came a moment earlier.
            if attempt == MAKE_ATTEMPTS:
                raise
            log.warning("the token failed to make %s %r; making it again (attempt %d of %d)",
                        what, label, attempt + 1, MAKE_ATTEMPTS)
            continue
        if all(_carries(made_object, key_id, label) for made_object in made):
            return made
        for made_object in made:
            made_object.destroy()
        log.warning("the token lost the id and label of %s %r as it was made (another process searched the "
                    "token meanwhile); destroyed it, making it again (attempt %d of %d)",
                    what, label, attempt + 1, MAKE_ATTEMPTS)
    raise HsmOperationFailed(f"the token lost the id and label of {what} {label!r} each of the "
                             f"{MAKE_ATTEMPTS} times it was made: another process searches the token without pause")


def _carries(made_object: pkcs11.Object, key_id: bytes, label: str) -> bool:
    attributes = made_object.get_attributes([Attribute.ID, Attribute.LABEL])
    return attributes.get(Attribute.ID) == key_id and attributes.get(Attribute.LABEL) == label
