"""SealingKey: keys inside the HSM that encrypt small secrets stored outside it.

Used for OTP seeds: the database holds only ciphertext, and the keys that open it never leave the
token. Each sealed value is bound to a context (for example the account's username), so a value
copied to another row does not open there.

Tokens differ in the authenticated encryption they offer, so the scheme is chosen from the token's
mechanism list (:data:`SCHEMES`, best first) and recorded in the sealed value's first byte; every
scheme is always read, whatever the token prefers now:

- ``0x01`` AES-256-GCM: ``01 || nonce (12) || ciphertext || tag (16)``, the context as the AAD.
- ``0x02`` AES-256-CBC-PAD then HMAC-SHA256, for tokens without AES-GCM (openCryptoki's soft
  token): ``02 || IV (16) || ciphertext || MAC (32)``, the MAC computed in the token with a second
  key (:attr:`SealingKey.mac_label`) over the version, the IV, the context (length first) and the
  ciphertext, and checked before anything is decrypted.

Every node of a service must open the same seeds, so the keys are extractable, but only wrapped
under a key the security officer marked trusted (CKA_WRAP_WITH_TRUSTED): the key ceremony
(signserver/hsm/ceremony.py) copies them to the other tokens with the master keys. A key made
before it could be copied (not extractable) keeps working on its own token, and cannot leave it. A
token that does not know CKA_WRAP_WITH_TRUSTED (openCryptoki) gets keys that are not extractable
at all: an extractable key there could be wrapped under any key the user makes, and so read.
"""

from __future__ import annotations

import hmac
import logging
import os
import struct
from dataclasses import dataclass
from enum import Enum

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from signserver.errors import DataCorrupted, HsmOperationFailed, KeyNotFound
from signserver.hsm.capabilities import TokenCapabilities
from signserver.hsm.session import TokenSession
from signserver.hsm.trusted_export import generate_shared_key

log = logging.getLogger(__name__)

SEALING_LABEL = "signserver-sealing"
MAC_LABEL_SUFFIX = "-mac"

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

# The MAC key of the AES-CBC scheme: computes and checks MACs, and nothing else.
SEALING_MAC_TEMPLATE = {
    **SEALING_TEMPLATE,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.SIGN: True,
    Attribute.VERIFY: True,
}

_MAC_KEY_BITS = 256  # HMAC-SHA256's block is 512 bits; a key of its output size is the usual choice


class SealingScheme(Enum):
    """An authenticated encryption a sealed value was made with; the value is its version byte."""

    AES_GCM = b"\x01"
    AES_CBC_HMAC_SHA256 = b"\x02"

    @property
    def label(self) -> str:
        """The scheme's name, as logs and errors give it."""
        return _SCHEME_NAMES[self]

    @property
    def needs_mac_key(self) -> bool:
        return self is SealingScheme.AES_CBC_HMAC_SHA256


_SCHEME_NAMES = {
    SealingScheme.AES_GCM: "aes-256-gcm",
    SealingScheme.AES_CBC_HMAC_SHA256: "aes-256-cbc-pad+hmac-sha256",
}

# Best first: what sealing asks of the token under each scheme.
SCHEMES: tuple[tuple[SealingScheme, tuple[Mechanism, ...]], ...] = (
    (SealingScheme.AES_GCM, (Mechanism.AES_KEY_GEN, Mechanism.AES_GCM)),
    (SealingScheme.AES_CBC_HMAC_SHA256, (Mechanism.AES_KEY_GEN, Mechanism.AES_CBC_PAD,
                                         Mechanism.GENERIC_SECRET_KEY_GEN, Mechanism.SHA256_HMAC)),
)

_NONCE_BYTES = 12
_TAG_BITS = 128
_IV_BYTES = 16
_BLOCK_BYTES = 16
_MAC_BYTES = 32


@dataclass(frozen=True)
class SealingKeyInfo:
    label: str
    check_value: str  # hex: the same key on every token has the same value
    copyable: bool  # extractable by wrap-with-trusted; False for a key made before it could be copied
    mac: "SealingKeyInfo | None" = None  # the MAC key, on a token that holds one


class SealingKey:
    """Seals and opens small secrets inside the HSM with the token's best authenticated encryption,
    creating its keys on first use.

    ``capabilities`` replaces the token's own mechanism list when choosing the scheme (a cluster
    whose tokens differ, or a test of a poorer token); by default the token's is read once.
    """

    def __init__(self, session: TokenSession, label: str = SEALING_LABEL,
                 capabilities: TokenCapabilities | None = None):
        self._session = session
        self.label = label
        self._capabilities = capabilities
        self._scheme: SealingScheme | None = None

    @property
    def mac_label(self) -> str:
        """The label of the MAC key the AES-CBC scheme uses beside the sealing key."""
        return self.label + MAC_LABEL_SUFFIX

    def scheme(self) -> SealingScheme:
        """The scheme new values are sealed with: the first of :data:`SCHEMES` the token offers.

        Raises: UnsupportedAlgorithm: the token offers none (the message lists what would do).
            HsmError: the token failed.
        """
        if self._scheme is None:
            capabilities = self._capabilities if self._capabilities is not None else self._session.capabilities()
            self._scheme = capabilities.choose(SCHEMES, "sealing OTP seeds")
            log.debug("OTP seeds are sealed with %s", self._scheme.label)
        return self._scheme

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``context`` with :meth:`scheme`.

        Raises: UnsupportedAlgorithm: the token offers no scheme. HsmError.
        """
        scheme = self.scheme()
        if scheme is SealingScheme.AES_GCM:
            nonce = os.urandom(_NONCE_BYTES)
            parameter = GCMParams(nonce, context, _TAG_BITS)
            ciphertext = self._session.run(
                lambda s: self.handle(s).encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=parameter),
                "seal a secret")
            return scheme.value + nonce + ciphertext

        iv = os.urandom(_IV_BYTES)

        def encrypt_then_mac(session: pkcs11.Session) -> bytes:
            ciphertext = self.handle(session).encrypt(plaintext, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
            mac = self.mac_handle(session, create=True).sign(_mac_input(scheme, iv, context, ciphertext),
                                                             mechanism=Mechanism.SHA256_HMAC)
            return scheme.value + iv + ciphertext + bytes(mac)

        return self._session.run(encrypt_then_mac, "seal a secret")

    def unseal(self, sealed: bytes, context: bytes) -> bytes:
        """Decrypt what :meth:`seal` made with the same ``context``, under whichever scheme it
        records (not only the one the token prefers now).

        Raises:
            DataCorrupted: the value was altered, or belongs to another context.
            HsmOperationFailed: the value was sealed with a MAC key this token does not hold (sealed
                on another token, whose keys the key ceremony did not copy here); the log says so.
            HsmError: the token failed.
        """
        version = sealed[:1]
        if version == SealingScheme.AES_GCM.value:
            return self._open_gcm(sealed, context)
        if version == SealingScheme.AES_CBC_HMAC_SHA256.value:
            return self._open_cbc_hmac(sealed, context)
        raise DataCorrupted("a sealed secret is damaged")

    def _open_gcm(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + _TAG_BITS // 8:
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

    def _open_cbc_hmac(self, sealed: bytes, context: bytes) -> bytes:
        scheme = SealingScheme.AES_CBC_HMAC_SHA256
        ciphertext_bytes = len(sealed) - 1 - _IV_BYTES - _MAC_BYTES
        if ciphertext_bytes < _BLOCK_BYTES or ciphertext_bytes % _BLOCK_BYTES:
            raise DataCorrupted("a sealed secret is damaged")
        iv, ciphertext, mac = sealed[1:1 + _IV_BYTES], sealed[1 + _IV_BYTES:-_MAC_BYTES], sealed[-_MAC_BYTES:]

        def check_then_decrypt(session: pkcs11.Session) -> bytes:
            try:
                mac_key = self.mac_handle(session, create=False)
            except KeyNotFound as exc:
                # A fault of the deployment, not of the caller: the detail (key labels, what to do)
                # goes to the log, and the caller hears only that the HSM cannot serve it.
                log.error("%s", exc)
                raise HsmOperationFailed("a sealed secret cannot be opened on this token; see the server's "
                                         "log") from None
            expected = mac_key.sign(_mac_input(scheme, iv, context, ciphertext), mechanism=Mechanism.SHA256_HMAC)
            # Nothing is decrypted before the MAC matches: a padding error never tells an attacker
            # anything. Compared in constant time, so timing does not reveal how much matched.
            if not hmac.compare_digest(bytes(expected), mac):
                raise DataCorrupted("a sealed secret failed its integrity check")
            try:
                return self.handle(session).decrypt(ciphertext, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
            except (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange, p11.FunctionFailed):
                # A MAC that matches over a bad padding: the two keys are not a pair.
                raise DataCorrupted("a sealed secret does not open with this token's sealing key") from None

        return self._session.run(check_then_decrypt, "open a sealed secret")

    def describe(self) -> SealingKeyInfo:
        """The keys' check values and whether the key ceremony can copy them, generating what
        :meth:`scheme` needs if the token has none yet, as its first use would.

        Raises: UnsupportedAlgorithm: the token offers no scheme. HsmError.
        """
        scheme = self.scheme()

        def read(session: pkcs11.Session) -> SealingKeyInfo:
            key = self.handle(session)
            mac_key = self.mac_handle(session, create=scheme.needs_mac_key, missing_ok=True)
            mac = None if mac_key is None else SealingKeyInfo(
                self.mac_label, mac_check_value(mac_key), bool(mac_key[Attribute.EXTRACTABLE]))
            return SealingKeyInfo(self.label, token_check_value(key), bool(key[Attribute.EXTRACTABLE]), mac)
        return self._session.run(read, "read the sealing key")

    def handle(self, session: pkcs11.Session) -> pkcs11.SecretKey:
        """The AES key's handle: searched for (or generated) once per session, then kept, so that
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
                key = generate_shared_key(session, KeyType.AES, 256, self.label, SEALING_TEMPLATE, "OTP sealing keys")
                log.info("generated the AES-256 sealing key %r in the HSM", self.label)
            self._session.cache[cache_key] = key
        return key

    def mac_handle(self, session: pkcs11.Session, create: bool, missing_ok: bool = False) -> pkcs11.SecretKey | None:
        """The MAC key's handle, kept like :meth:`handle`'s; generated if the token has none and
        ``create``. Call inside :meth:`TokenSession.run`.

        Raises:
            KeyNotFound: the token has none, ``create`` and ``missing_ok`` are false.
            pkcs11.PKCS11Error, which the session translates.
        """
        cache_key = ("sealing-mac", self.label)
        key = self._session.cache.get(cache_key)
        if key is None:
            found = self._session.find(session, {Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                 Attribute.LABEL: self.mac_label})
            if found:
                key = found[0]
            elif create:
                key = generate_shared_key(session, KeyType.GENERIC_SECRET, _MAC_KEY_BITS, self.mac_label, SEALING_MAC_TEMPLATE,
                                        "OTP sealing keys",
                                Mechanism.GENERIC_SECRET_KEY_GEN)
                log.info("generated the HMAC-SHA256 sealing key %r in the HSM", self.mac_label)
            elif missing_ok:
                return None
            else:
                raise KeyNotFound(
                    f"a secret was sealed with {SealingScheme.AES_CBC_HMAC_SHA256.label} under a MAC key "
                    f"({self.mac_label!r}) this token does not hold: it was sealed on another token; copy that "
                    "token's keys here with the key ceremony (`signserver hsm master export`)")
            self._session.cache[cache_key] = key
        return key


def _mac_input(scheme: SealingScheme, iv: bytes, context: bytes, ciphertext: bytes) -> bytes:
    """What the MAC covers: the context's length comes first, so that no split of context and
    ciphertext reads as another."""
    return scheme.value + iv + struct.pack(">I", len(context)) + context + ciphertext


def token_check_value(key: pkcs11.SecretKey) -> str:
    """The key's CKA_CHECK_VALUE in hex, or "" on a token that keeps none."""
    try:
        return bytes(key[Attribute.CHECK_VALUE]).hex()
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return ""


def mac_check_value(key: pkcs11.SecretKey) -> str:
    """A MAC key's check value, computed in the token: the first 3 bytes of its HMAC-SHA256 of a
    zero block (tokens differ in the CKA_CHECK_VALUE they give generic secrets, or give none, and
    a MAC key may only compute MACs).

    Raises: pkcs11.PKCS11Error.
    """
    return bytes(key.sign(bytes(_BLOCK_BYTES), mechanism=Mechanism.SHA256_HMAC))[:3].hex()
