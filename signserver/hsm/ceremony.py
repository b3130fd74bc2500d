"""The key ceremony: a master key copied from one token to another, never in clear.

1. On the destination token, :func:`begin_receiving` generates a transport key pair (RSA-3072):
   the private half stays on the token, sensitive, never extractable, able only to unwrap; the
   public half is handed out (PEM) to the source token's administrators.
2. On the source token, the security officer marks that public key trusted
   (:func:`trust_transport_key`: only the SO may set CKA_TRUSTED), and a user session wraps the
   master key under it (:func:`export_master`; the master key is extractable only under a trusted
   key, CKA_WRAP_WITH_TRUSTED). The trusted key is destroyed straight after.
3. On the destination token, :func:`import_master` unwraps the file with the transport private
   key into a token key with the master key's attributes, checks that its check value is the one
   the source read out (given out of band), and destroys the transport key pair.

The wrapped file opens only with that one transport key, which never leaves the destination
token and is destroyed once used: a copied or intercepted file is useless.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

from signserver.errors import AlreadyExists, DataCorrupted, InvalidArgument, KeyNotFound
from signserver.hsm.master_keys import MASTER_TEMPLATE, MasterKeyInfo, MasterKeys
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.session import TokenSession, find_token
from signserver.hsm.translate import translate
from signserver.secret import Secret

log = logging.getLogger(__name__)

TRANSPORT_LABEL_PREFIX = "signserver-transport-"
TRANSPORT_BITS = 3072
FILE_FORMAT = "signserver wrapped master key 1"
# SoftHSM 2.6.1 wraps under RSA only with OAEP over SHA-1 and MGF1-SHA-1 (measured). OAEP's
# security does not rest on SHA-1's collision resistance.
WRAP_MECHANISM = Mechanism.RSA_PKCS_OAEP
WRAP_PARAMETER = (Mechanism.SHA_1, MGF.SHA1, None)
WRAP_NAME = "rsa-oaep-sha1"

_TRANSPORT_PUBLIC = {  # on the destination token, only until the ceremony ends
    Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
    Attribute.WRAP: True, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01",
}
_TRANSPORT_PRIVATE = {  # unwraps the one master key it is sent, and nothing else
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
    Attribute.UNWRAP: True, Attribute.DECRYPT: False, Attribute.SIGN: False,
}

_CHECK_PROBE = {  # a moment's session copy of the received key, to compute its check value
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True, Attribute.DECRYPT: False, Attribute.WRAP: False, Attribute.UNWRAP: False,
    Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False,
}


@dataclass(frozen=True)
class TransportKey:
    """The destination token's transport public key, as handed to the source's administrators."""

    label: str
    public_pem: bytes
    fingerprint: str  # SHA-256 of the SubjectPublicKeyInfo, hex; also the key pair's CKA_ID


@dataclass(frozen=True)
class WrappedMaster:
    """A master key wrapped under one destination token's transport key."""

    label: str
    check_value: str  # as the source token reads it (informative: import checks the one given out of band)
    transport_fingerprint: str
    wrapped: bytes

    def to_bytes(self) -> bytes:
        return (json.dumps({"format": FILE_FORMAT, "label": self.label, "check_value": self.check_value,
                            "mechanism": WRAP_NAME, "transport_key_sha256": self.transport_fingerprint,
                            "wrapped": base64.b64encode(self.wrapped).decode("ascii")}, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "WrappedMaster":
        """Raises: InvalidArgument: not a wrapped master key file."""
        try:
            fields = json.loads(data)
            if fields.get("format") != FILE_FORMAT or fields.get("mechanism") != WRAP_NAME:
                raise ValueError("format")
            return cls(label=str(fields["label"]), check_value=str(fields["check_value"]),
                       transport_fingerprint=str(fields["transport_key_sha256"]),
                       wrapped=base64.b64decode(fields["wrapped"], validate=True))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidArgument("not a wrapped master key file (made by `signserver hsm master export`)") from None


def fingerprint(public: rsa.RSAPublicKey) -> str:
    return hashlib.sha256(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def read_transport_key(pem: bytes) -> rsa.RSAPublicKey:
    """Raises: InvalidArgument: not an RSA public key of the transport key's size."""
    try:
        public = load_pem_public_key(pem)
    except ValueError:
        raise InvalidArgument("the transport key is not a PEM public key (made by `signserver hsm master "
                              "receive-begin`)") from None
    if not isinstance(public, rsa.RSAPublicKey) or public.key_size < TRANSPORT_BITS:
        raise InvalidArgument(f"a transport key is an RSA key of at least {TRANSPORT_BITS} bits")
    return public


# --- destination: the transport key pair -------------------------------------------------------

def begin_receiving(session: TokenSession) -> TransportKey:
    """Generate a transport key pair on the destination token, labelled
    ``signserver-transport-<n>`` (the next free n), and return its public half.

    Raises: HsmError.
    """
    def generate(s: pkcs11.Session) -> TransportKey:
        taken = {str(o[Attribute.LABEL]) for o in session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                                  Attribute.KEY_TYPE: KeyType.RSA})}
        number = 1
        while f"{TRANSPORT_LABEL_PREFIX}{number}" in taken:
            number += 1
        label = f"{TRANSPORT_LABEL_PREFIX}{number}"
        public, private = s.generate_keypair(KeyType.RSA, TRANSPORT_BITS, label=label, id=os.urandom(16), store=True,
                                             public_template=dict(_TRANSPORT_PUBLIC),
                                             private_template=dict(_TRANSPORT_PRIVATE))
        key = rsa.RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                   int.from_bytes(public[Attribute.MODULUS], "big")).public_key()
        key_print = fingerprint(key)
        # Known by its fingerprint: the export names it, and the import finds it by it.
        for half in (public, private):
            half[Attribute.ID] = bytes.fromhex(key_print)
        return TransportKey(label, key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), key_print)

    transport = session.run(generate, "generate a transport key pair")
    log.info("generated the transport key pair %s (SHA-256 %s)", transport.label, transport.fingerprint)
    return transport


# --- source: trust the transport key, wrap the master under it --------------------------------

def trust_transport_key(module: Path | None, token_label: str, so_pin: Secret, transport_pem: bytes) -> str:
    """As the security officer, store the transport public key on the source token marked
    trusted (the only key the master key may be wrapped under). Returns its fingerprint.

    Call with no user session open in this process (a token has one login at a time).

    Raises: InvalidArgument (not a transport key), TokenNotFound, HsmLoginFailed (SO PIN),
        HsmPinLocked, HsmError.
    """
    public = read_transport_key(transport_pem)
    key_print = fingerprint(public)
    numbers = public.public_numbers()
    with pkcs11_lock():
        token = find_token(load_module(module), token_label, module)
        try:
            with token.open(rw=True, so_pin=so_pin.reveal()) as session:
                session.create_object({
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                    Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.TRUSTED: True,
                    Attribute.WRAP: True, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
                    Attribute.LABEL: f"{TRANSPORT_LABEL_PREFIX}trusted", Attribute.ID: bytes.fromhex(key_print),
                    Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
                    Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
                })
        except p11.PKCS11Error as exc:
            raise translate(exc, "store the trusted transport key") from exc
    log.info("the security officer marked the transport key %s trusted on token %r", key_print, token_label)
    return key_print


def export_master(session: TokenSession, masters: MasterKeys, label: str, transport_fingerprint: str) -> WrappedMaster:
    """Wrap the master key ``label`` under the trusted transport key, then destroy that key
    (whether the wrap worked or not).

    Raises: KeyNotFound: no such master key, or no trusted transport key of that fingerprint.
        HsmError.
    """
    def wrap(s: pkcs11.Session) -> WrappedMaster:
        trusted = session.find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                   Attribute.ID: bytes.fromhex(transport_fingerprint), Attribute.TRUSTED: True})
        if not trusted:
            raise KeyNotFound("no trusted transport key on the token: the security officer step did not run")
        try:
            master = masters.handle(s, label)
            info = MasterKeyInfo(label, bytes(master[Attribute.CHECK_VALUE]).hex())
            wrapped = trusted[0].wrap_key(master, mechanism=WRAP_MECHANISM, mechanism_param=WRAP_PARAMETER)
        finally:
            for key in trusted:
                key.destroy()
        return WrappedMaster(label, info.check_value, transport_fingerprint, wrapped)

    exported = session.run(wrap, f"wrap the master key {label!r} for transport")
    log.info("exported the master key %s under the transport key %s", label, transport_fingerprint)
    return exported


def discard_trusted_key(session: TokenSession, transport_fingerprint: str) -> None:
    """Destroy a trusted transport key left on the token (an export that stopped). Raises: HsmError."""
    def discard(s: pkcs11.Session) -> None:
        for key in session.find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                    Attribute.ID: bytes.fromhex(transport_fingerprint)}):
            key.destroy()
    session.run(discard, "destroy the trusted transport key")


# --- destination: unwrap, check, destroy the transport key pair -------------------------------

def import_master(session: TokenSession, wrapped: WrappedMaster, expected_check_value: str) -> MasterKeyInfo:
    """Unwrap the master key into a token key of its label, check its check value against the
    one the source read out, and destroy the transport key pair. The check value is computed
    before anything is stored: a key whose value differs is never stored (and the transport key
    pair stays, for a new export).

    Raises:
        InvalidArgument: the check value is not hex.
        AlreadyExists: the token already holds a key of that label.
        KeyNotFound: the transport key pair is not on this token (another token's file, or used).
        DataCorrupted: the file does not unwrap, or the key's check value differs.
        HsmError.
    """
    expected = expected_check_value.strip().lower()
    try:
        bytes.fromhex(expected)
    except ValueError:
        raise InvalidArgument("the check value is hexadecimal (as `signserver hsm master status` shows it)") from None
    if not expected:
        raise InvalidArgument("give the master key's check value, read on the source token")

    def unwrap(s: pkcs11.Session) -> MasterKeyInfo:
        if session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: wrapped.label}):
            raise AlreadyExists(f"the token already holds a key labelled {wrapped.label!r}")
        pair = session.find(s, {Attribute.ID: bytes.fromhex(wrapped.transport_fingerprint)})
        private = [o for o in pair if o[Attribute.CLASS] == ObjectClass.PRIVATE_KEY]
        if not private:
            raise KeyNotFound("this token holds no transport key for this file: it was wrapped for another token, "
                              "or its transport key was used and destroyed (start again with `receive-begin`)")
        check_value = _check_value_of(private[0], wrapped.wrapped)
        if check_value != expected:
            raise DataCorrupted(f"the wrapped key's check value is {check_value}, not {expected}: it is not the "
                                "source's master key; nothing was imported")
        key = private[0].unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped.wrapped, label=wrapped.label,
                                    id=os.urandom(16), mechanism=WRAP_MECHANISM, mechanism_param=WRAP_PARAMETER,
                                    store=True, template=dict(MASTER_TEMPLATE))
        # SoftHSM gives an unwrapped key no check value (and refuses one in the template): record
        # the one the token computed, which servers compare with the database's on every start.
        key[Attribute.CHECK_VALUE] = bytes.fromhex(check_value)
        for half in pair:
            half.destroy()
        return MasterKeyInfo(wrapped.label, check_value)

    info = session.run(unwrap, f"import the master key {wrapped.label!r}")
    log.info("imported the master key %s (check value %s); the transport key pair is destroyed",
             info.label, info.check_value)
    return info


def _check_value_of(transport_private: pkcs11.PrivateKey, wrapped: bytes) -> str:
    """The wrapped key's check value (the first 3 bytes of its AES-ECB encryption of a zero block),
    computed in the token: a session copy able only to encrypt is unwrapped, used once and
    destroyed, since the master key itself may not encrypt.

    Raises: DataCorrupted: the file does not unwrap (altered, or wrapped for another key).
    """
    try:
        probe = transport_private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=WRAP_MECHANISM,
                                             mechanism_param=WRAP_PARAMETER, store=False, template=dict(_CHECK_PROBE))
    except (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.EncryptedDataInvalid, p11.GeneralError):
        raise DataCorrupted("the wrapped master key does not unwrap: the file was altered") from None
    try:
        return probe.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)[:3].hex()
    finally:
        probe.destroy()


def transport_keys(session: TokenSession) -> list[str]:
    """Labels of the transport key pairs waiting on this token. Raises: HsmError."""
    def labels(s: pkcs11.Session) -> list[str]:
        return sorted({str(o[Attribute.LABEL]) for o in session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                                        Attribute.KEY_TYPE: KeyType.RSA})
                       if str(o[Attribute.LABEL]).startswith(TRANSPORT_LABEL_PREFIX)})
    return session.run(labels, "list the transport keys")

