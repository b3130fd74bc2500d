"""MasterKeys: the AES-256 keys on the token that wrap every holder's signing data package.

A master key never leaves the token in clear: it is sensitive, and extractable only by wrapping
under a key marked trusted (CKA_WRAP_WITH_TRUSTED), which only the token's security officer can
mark. That is what the key ceremony uses to copy it to another token (signserver/hsm/ceremony.py).
Each master key is known by its label and its check value (CKA_CHECK_VALUE, or the same value
computed in the token where it keeps none), which tells copies on other tokens apart from a
different key under the same label.

On a token that refuses CKA_WRAP_WITH_TRUSTED in a template (openCryptoki 3.8's soft token answers
AttributeTypeInvalid), a master key is made without it and not extractable at all: an extractable
key without that attribute could be wrapped out by any key the token's user can make, in clear to
whoever chose that key. The key ceremony cannot copy a master key from such a token.

Handles are found once per session and kept: nothing on a request path searches the token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from signserver.errors import AlreadyExists, KeyNotFound
from signserver.hsm.sealing import token_check_value
from signserver.hsm.session import TokenSession
from signserver.hsm.trusted_export import generate_shared_key

log = logging.getLogger(__name__)

MASTER_LABEL_PREFIX = "signserver-master-"

# The master key's attributes. It wraps and unwraps, and does nothing else; it may itself be
# wrapped only by a trusted key (the key ceremony's transport key, marked by the security officer).
MASTER_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.WRAP_WITH_TRUSTED: True,
    Attribute.WRAP: True,
    Attribute.UNWRAP: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}


@dataclass(frozen=True)
class MasterKeyInfo:
    label: str
    check_value: str  # hex: the same key on every token has the same value


def master_label(number: int) -> str:
    return f"{MASTER_LABEL_PREFIX}{number}"


def master_number(label: str) -> int | None:
    """N of ``signserver-master-N``, or None for a label that is no master key's."""
    suffix = label[len(MASTER_LABEL_PREFIX):] if label.startswith(MASTER_LABEL_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


class MasterKeys:
    """Creates, finds (once per session) and destroys master keys on the token."""

    def __init__(self, session: TokenSession):
        self._session = session

    def create(self, label: str) -> MasterKeyInfo:
        """Generate a new master key on the token.

        The search for the label and the generation are two steps, and the PKCS#11 lock that keeps
        them together is this process's: processes that make master keys on one token take turns
        under the database's master-key creation lock (creating_master_key in
        signserver/accounts/master_rotation.py), or two could both find the label free and both make
        a key under it. (Searching again after the generation would not tell: a token such as
        SoftHSM may not show a process the key another made a moment before.)

        Raises: AlreadyExists: a key with that label is on the token. UnsupportedAlgorithm, HsmError.
        """
        def generate(session: pkcs11.Session) -> MasterKeyInfo:
            if self._find(session, label) is not None:
                raise AlreadyExists(f"a master key labelled {label!r} is already on the token")
            key = generate_shared_key(session, KeyType.AES, 256, label, MASTER_TEMPLATE, "master keys")
            self._session.cache[("master", label)] = key
            return MasterKeyInfo(label, master_check_value(session, key))

        info = self._session.run(generate, f"generate the master key {label!r}")
        log.info("generated the master key %s (check value %s) on the token", label, info.check_value)
        return info

    def describe(self, label: str) -> MasterKeyInfo:
        """Raises: KeyNotFound (with what to do), HsmError."""
        return self._session.run(lambda s: MasterKeyInfo(label, master_check_value(s, self.handle(s, label))),
                                 f"read the master key {label!r}")

    def present(self, label: str) -> bool:
        """Whether the token holds the master key now: searched, not from the cache, for another
        process may have destroyed it. For administrators, not for request paths.

        Raises: HsmError.
        """
        def look(session: pkcs11.Session) -> bool:
            if self._find(session, label) is not None:
                return True
            self._session.cache.pop(("master", label), None)
            return False
        return self._session.run(look, f"look for the master key {label!r}")

    def on_token(self) -> list[MasterKeyInfo]:
        """Every master key the token holds (labelled ``signserver-master-N``), by number, with
        its check value. Searches the token's secret keys: for administrators, not for request
        paths.

        Raises: HsmError.
        """
        def search(session: pkcs11.Session) -> list[MasterKeyInfo]:
            found = []
            for key in self._session.find(session, {Attribute.CLASS: ObjectClass.SECRET_KEY}):
                label = key.label or ""
                if master_number(label) is not None:
                    found.append(MasterKeyInfo(label, master_check_value(session, key)))
            return sorted(found, key=lambda info: (master_number(info.label), info.check_value))
        return self._session.run(search, "list the master keys on the token")

    def destroy(self, label: str) -> None:
        """Destroy the master key (every package it still wraps becomes unusable).

        Raises: KeyNotFound, HsmError.
        """
        def destroy(session: pkcs11.Session) -> None:
            self.handle(session, label).destroy()
            self._session.cache.pop(("master", label), None)
        self._session.run(destroy, f"destroy the master key {label!r}")
        log.info("destroyed the master key %s", label)

    def handle(self, session: pkcs11.Session, label: str) -> pkcs11.SecretKey:
        """The key's handle, searched for once per session; call inside :meth:`TokenSession.run`.

        Raises: KeyNotFound: the token does not hold it (copy it with the key ceremony).
        """
        cache_key = ("master", label)
        key = self._session.cache.get(cache_key)
        if key is None:
            key = self._find(session, label)
            if key is None:
                raise KeyNotFound(
                    f"the master key {label!r} is not on the token {self._session.token_label!r}: copy it "
                    "from a token that holds it with the key ceremony (`signserver hsm master export` / "
                    "`import`)")
            self._session.cache[cache_key] = key
        return key

    def _find(self, session: pkcs11.Session, label: str) -> pkcs11.SecretKey | None:
        found = self._session.find(session, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        return found[0] if found else None




_ZERO_BLOCK = bytes(16)


def master_check_value(session: pkcs11.Session, key: pkcs11.SecretKey) -> str:
    """The master key's check value: its CKA_CHECK_VALUE, or on a token that keeps none
    (openCryptoki 3.8), the same value computed in the token.

    An AES key's check value is the first 3 bytes of its encryption of a zero block. A master key
    may only wrap, so the block is had by wrapping a throw-away all-zero AES key with AES-CBC and
    a zero IV: the first block of that is the encryption of the zero block. (Whoever holds the PIN
    can wrap keys of their choice under the master key anyway: this reveals nothing more.)

    Raises: pkcs11.PKCS11Error, which :meth:`TokenSession.run` translates.
    """
    return token_check_value(key) or computed_check_value(session, key)


def computed_check_value(session: pkcs11.Session, key: pkcs11.SecretKey) -> str:
    """An AES key's check value computed in the token through a wrap (see :func:`master_check_value`).

    Raises: pkcs11.PKCS11Error.
    """
    return encrypted_block(session, key, _ZERO_BLOCK)[:3].hex()


def encrypted_block(session: pkcs11.Session, key: pkcs11.SecretKey, block: bytes) -> bytes:
    """The AES key's encryption of one 16-byte ``block``, computed in the token through a wrap (a
    key made of the block, wrapped with AES-CBC under a zero IV), for a key that may wrap but not
    encrypt (see :func:`master_check_value`).

    Raises: pkcs11.PKCS11Error.
    """
    block_key = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: block,
        Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    try:
        return bytes(key.wrap_key(block_key, mechanism=Mechanism.AES_CBC, mechanism_param=_ZERO_BLOCK))[:16]
    finally:
        block_key.destroy()


