"""SealingKey: an AES-256 key inside the HSM that encrypts small secrets stored outside it.

Used for OTP seeds: the database holds only AES-GCM ciphertext, and the key that opens it never
leaves the token. Each sealed value is bound to a context (for example the account's username),
so a value copied to another row does not open there.

Every node of a service must open the same seeds, so the key is extractable, but only wrapped under
a key the security officer marked trusted (CKA_WRAP_WITH_TRUSTED): the key ceremony
(signserver/hsm/ceremony.py) copies it to the other tokens with the master keys. A key made before
it could be copied (not extractable) keeps working on its own token, and cannot leave it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from signserver.errors import DataCorrupted
from signserver.hsm.session import TokenSession

log = logging.getLogger(__name__)

SEALING_LABEL = "signserver-sealing"

# Encrypts and decrypts, and nothing else; it may itself be wrapped only by a trusted key (the key
# ceremony's transport key), like a master key.
SEALING_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.WRAP_WITH_TRUSTED: True,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}

_VERSION = b"\x01"
_NONCE_BYTES = 12
_TAG_BITS = 128


@dataclass(frozen=True)
class SealingKeyInfo:
    label: str
    check_value: str  # hex, as the token keeps it: the same key on every token has the same value
    copyable: bool  # extractable by wrap-with-trusted; False for a key made before it could be copied


class SealingKey:
    """Encrypts and decrypts with AES-256-GCM inside the HSM, creating the key on first use."""

    def __init__(self, session: TokenSession, label: str = SEALING_LABEL):
        self._session = session
        self.label = label

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``context``. Raises: HsmError."""
        nonce = os.urandom(_NONCE_BYTES)
        parameter = GCMParams(nonce, context, _TAG_BITS)
        ciphertext = self._session.run(
            lambda s: self.handle(s).encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=parameter),
            "seal a secret")
        return _VERSION + nonce + ciphertext

    def unseal(self, sealed: bytes, context: bytes) -> bytes:
        """Decrypt what :meth:`seal` made with the same ``context``.

        Raises:
            DataCorrupted: the value was altered, or belongs to another context.
            HsmError: the token failed.
        """
        if len(sealed) < 1 + _NONCE_BYTES + _TAG_BITS // 8 or sealed[:1] != _VERSION:
            raise DataCorrupted("a sealed secret is damaged")
        nonce, ciphertext = sealed[1:1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES:]
        parameter = GCMParams(nonce, context, _TAG_BITS)

        def decrypt(session: pkcs11.Session) -> bytes:
            try:
                return self.handle(session).decrypt(ciphertext, mechanism=Mechanism.AES_GCM,
                                                    mechanism_param=parameter)
            except (p11.GeneralError, p11.EncryptedDataInvalid, p11.FunctionFailed):
                # SoftHSM reports a failed GCM tag check as a general error.
                raise DataCorrupted("a sealed secret failed its integrity check") from None

        return self._session.run(decrypt, "open a sealed secret")

    def describe(self) -> SealingKeyInfo:
        """The key's check value and whether the key ceremony can copy it (generating the key if
        the token has none yet, as its first use would). Raises: HsmError."""
        def read(session: pkcs11.Session) -> SealingKeyInfo:
            key = self.handle(session)
            return SealingKeyInfo(self.label, token_check_value(key), bool(key[Attribute.EXTRACTABLE]))
        return self._session.run(read, "read the sealing key")

    def handle(self, session: pkcs11.Session) -> pkcs11.SecretKey:
        """The key's handle: searched for (or generated) once per session, then kept, so that
        sealing and opening OTP seeds never search the token. Call inside :meth:`TokenSession.run`.

        Raises: pkcs11.PKCS11Error, which the session translates.
        """
        cache_key = ("sealing", self.label)
        key = self._session.cache.get(cache_key)
        if key is None:
            found = self._session.find(session, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self.label})
            if found:
                key = found[0]
            else:
                key = session.generate_key(KeyType.AES, 256, label=self.label, id=os.urandom(16), store=True,
                                           template=dict(SEALING_TEMPLATE))
                log.info("generated the AES-256 sealing key %r in the HSM", self.label)
            self._session.cache[cache_key] = key
        return key


def token_check_value(key: pkcs11.SecretKey) -> str:
    """The key's CKA_CHECK_VALUE in hex, or "" on a token that keeps none."""
    try:
        return bytes(key[Attribute.CHECK_VALUE]).hex()
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return ""
