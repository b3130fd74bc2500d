"""The key ceremony: the keys every token of a service must share, copied from one token to
another, never in clear. They are the master keys (which wrap the holders' signing data packages)
and the sealing key (which seals the holders' OTP seeds), with its MAC key on a token that seals
without AES-GCM: a token lacking any of them cannot serve the holders of a database it shares.

1. On the destination token, :func:`begin_receiving` generates a transport key pair (RSA, of
   ``hsm.transport_key_bits``: 3072 by default):
   the private half stays on the token, sensitive, never extractable, able only to unwrap, and
   only into keys that are sensitive and extractable only under a trusted key
   (CKA_UNWRAP_TEMPLATE), its attributes fixed when it is made (CKA_MODIFIABLE false); the
   public half is handed out (PEM) to the source token's administrators.
2. On the source token, the security officer marks that public key trusted
   (:func:`trust_transport_key`: only the SO may set CKA_TRUSTED), and a user session wraps the
   shared keys under it into one file (:func:`export_keys`; each key is extractable only under a
   trusted key, CKA_WRAP_WITH_TRUSTED). The trusted key is destroyed straight after.
3. On the destination token, :func:`import_keys` computes each wrapped key's check value with the
   transport private key, compares it with the one the source read out (given out of band),
   stores the keys it lacks with their attributes, and destroys the transport key pair.

A check value covers the key's label and kind as well as the key (see :func:`check_block`), and
the kind, which sets what the stored key may do, follows from the label: a file whose label or
kind was altered on its way matches no check value the source printed.

The wrapped file opens only with that one transport key, which never leaves the destination
token and is destroyed once used: a copied or intercepted file is useless.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

from signserver.errors import (AlreadyExists, DataCorrupted, HsmOperationFailed, InvalidArgument, KeyNotFound,
                               SignServerError)
from signserver.hsm.array_attributes import ArrayAttributeMapper
from signserver.hsm.label_text import LabelTextMapper
from signserver.hsm.master_keys import MASTER_TEMPLATE, MasterKeys, encrypted_block, master_number
from signserver.hsm.module import load_module, pkcs11_calls
from signserver.hsm.new_objects import make_intact
from signserver.hsm.pin_guard import PinGuard
from signserver.hsm.sealing import MAC_LABEL_SUFFIX, SEALING_LABEL, SEALING_MAC_TEMPLATE, SEALING_TEMPLATE, SealingKey
from signserver.hsm.session import TokenSession, find_token
from signserver.hsm.translate import translate
from signserver.secret import Secret

log = logging.getLogger(__name__)

TRANSPORT_LABEL_PREFIX = "signserver-transport-"
TRUSTED_LABEL = f"{TRANSPORT_LABEL_PREFIX}trusted"  # the source's copy of the transport public key
FILE_FORMAT = "signserver wrapped keys 3"
# Files of earlier versions, refused: their check values cover the key alone, not its label and kind.
_EARLIER_FORMATS = ("signserver wrapped keys 2", "signserver wrapped master key 1")
# SoftHSM 2.6.1 wraps under RSA only with OAEP over SHA-1 and MGF1-SHA-1 (measured). OAEP's
# security does not rest on SHA-1's collision resistance.
WRAP_MECHANISM = Mechanism.RSA_PKCS_OAEP
WRAP_PARAMETER = (Mechanism.SHA_1, MGF.SHA1, None)
WRAP_NAME = "rsa-oaep-sha1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

MASTER, SEALING, SEALING_MAC = "master", "sealing", "sealing-mac"  # the kinds of shared key
# The ceremony's check values are whole blocks: an AES key's encryption of the key's check block
# (:func:`check_block`), a MAC key's HMAC-SHA256 of it (its first 16 bytes). Not the usual 3-byte
# check value (what CKA_CHECK_VALUE holds, and `status` shows): one key in 2**24 matches it, and
# whoever alters the file on its way can wrap a key of their choice under the (public) transport
# key. Nor of a zero block: an AES-GCM key's encryption of zeros is its authentication subkey
# (GHASH's H), which would let whoever reads it forge sealed values.
CHECK_VALUE_BYTES = 16
_CHECK_CONTEXT = b"signserver-check"
_ZERO_BLOCK = bytes(16)
_TEMPLATES = {MASTER: MASTER_TEMPLATE, SEALING: SEALING_TEMPLATE, SEALING_MAC: SEALING_MAC_TEMPLATE}
_KEY_TYPES = {MASTER: KeyType.AES, SEALING: KeyType.AES, SEALING_MAC: KeyType.GENERIC_SECRET}

_TRANSPORT_PUBLIC = {  # on the destination token, only until the ceremony ends
    Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
    Attribute.WRAP: True, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01",
}
# What every key the transport private key unwraps must be: whoever holds the destination's user
# PIN and the file could otherwise unwrap its keys readable. SoftHSM 2.6.1 refuses an unwrap whose
# template leaves out any of these or gives another value (CKR_TEMPLATE_INCONSISTENT), so each of
# the ceremony's own unwrap templates sets them all.
_UNWRAPPED = {Attribute.SENSITIVE: True, Attribute.WRAP_WITH_TRUSTED: True}
_TRANSPORT_PRIVATE = {  # unwraps the keys it is sent, and nothing else
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
    Attribute.UNWRAP: True, Attribute.DECRYPT: False, Attribute.SIGN: False, Attribute.SIGN_RECOVER: False,
    Attribute.UNWRAP_TEMPLATE: _UNWRAPPED,
    # Fixed once made: allowed to decrypt (or to sign, a raw RSA decryption), it would open the
    # file's keys in clear; a copy of a key that may not be modified may not be changed either.
    Attribute.MODIFIABLE: False,
}

_CHECK_PROBE = {  # a moment's session copy of a received key, to compute its check value
    Attribute.TOKEN: False, Attribute.PRIVATE: True, **_UNWRAPPED, Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True, Attribute.DECRYPT: False, Attribute.WRAP: False, Attribute.UNWRAP: False,
    Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False,
}
_MAC_CHECK_PROBE = {**_CHECK_PROBE, Attribute.ENCRYPT: False, Attribute.SIGN: True}  # a MAC key only computes MACs


def kind_of(label: str) -> str | None:
    """The kind of shared key ``label`` names (``signserver-master-N``, the sealing key's, its MAC
    key's), or None for a label no shared key bears."""
    try:
        if master_number(label) is not None:
            return MASTER
    except ValueError:  # digits int() does not read, such as superscripts: no master key's label
        return None
    return {SEALING_LABEL: SEALING, SEALING_LABEL + MAC_LABEL_SUFFIX: SEALING_MAC}.get(label)


def check_kind(label: str, kind: str) -> None:
    """Raises: InvalidArgument: ``label`` names no shared key, or a key of another kind."""
    named = kind_of(label)
    if named is None:
        raise InvalidArgument(f"{label!r} names no key the tokens share (signserver-master-N, {SEALING_LABEL}, "
                              f"{SEALING_LABEL + MAC_LABEL_SUFFIX})")
    if named != kind:
        raise InvalidArgument(f"the file says {label!r} is a {kind} key, but {label!r} is a {named} key: the file "
                              "was altered; nothing was imported")


def check_block(kind: str, label: str) -> bytes:
    """The block a key's ceremony check value is computed over: derived from its kind and label,
    so that the same key under another label or kind has another check value (a master key
    stored as the sealing key, or as a key that may encrypt, matches nothing the source printed).
    Not a zero block (see CHECK_VALUE_BYTES)."""
    return hashlib.sha256(b"\0".join([_CHECK_CONTEXT, kind.encode(), label.encode("utf-8", "surrogatepass")])
                          ).digest()[:16]


@dataclass(frozen=True)
class TransportKey:
    """The destination token's transport public key, as handed to the source's administrators."""

    label: str
    public_pem: bytes
    fingerprint: str  # SHA-256 of the SubjectPublicKeyInfo, hex; also the key pair's CKA_ID


@dataclass(frozen=True)
class SharedKey:
    """A key the tokens of a service share, known by its label and check value."""

    label: str
    kind: str  # MASTER, SEALING or SEALING_MAC
    check_value: str  # hex, CHECK_VALUE_BYTES: the same key on every token has the same value


@dataclass(frozen=True)
class WrappedKey:
    """One shared key wrapped under a destination token's transport key."""

    label: str
    kind: str
    check_value: str  # as the source token reads it (informative: import checks the ones given out of band)
    wrapped: bytes


@dataclass(frozen=True)
class ImportedKey:
    label: str
    kind: str
    check_value: str
    stored: bool  # False: the destination already held this very key (same check value)


@dataclass(frozen=True)
class WrappedKeys:
    """What one export wrote: the shared keys, wrapped under one transport key."""

    transport_fingerprint: str
    keys: tuple[WrappedKey, ...]

    @property
    def labels(self) -> list[str]:
        return [key.label for key in self.keys]

    def to_bytes(self) -> bytes:
        return (json.dumps({"format": FILE_FORMAT, "mechanism": WRAP_NAME,
                            "transport_key_sha256": self.transport_fingerprint,
                            "keys": [{"label": key.label, "kind": key.kind, "check_value": key.check_value,
                                      "wrapped": base64.b64encode(key.wrapped).decode("ascii")}
                                     for key in self.keys]}, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "WrappedKeys":
        """Raises: InvalidArgument: not a wrapped keys file, one of an earlier version, or one that
        gives a key a kind its label does not name (see :func:`kind_of`)."""
        try:
            fields = json.loads(data)
            if fields.get("mechanism") != WRAP_NAME:
                raise ValueError("mechanism")
            if fields.get("format") in _EARLIER_FORMATS:
                raise InvalidArgument(
                    "the wrapped keys file was made by an earlier version of signserver, whose check values do not "
                    "cover each key's label and kind: export again with this version (the transport key pair "
                    "stays on this token for it); nothing was imported")
            if fields.get("format") != FILE_FORMAT:
                raise ValueError("format")
            keys = tuple(WrappedKey(label=str(entry["label"]), kind=str(entry["kind"]),
                                    check_value=str(entry["check_value"]),
                                    wrapped=base64.b64decode(entry["wrapped"], validate=True))
                         for entry in fields["keys"])
            labels = [key.label for key in keys]
            if not keys or len(set(labels)) != len(labels) or any(kind_of(label) is None for label in labels):
                raise ValueError("keys")
            transport = fields["transport_key_sha256"]
            # The transport key pair is found by it (its CKA_ID): a SHA-256 in hex, nothing else.
            if not isinstance(transport, str) or not _SHA256_HEX.fullmatch(transport):
                raise ValueError("transport_key_sha256")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: nested too deep
            raise InvalidArgument("not a wrapped keys file (made by `signserver hsm master export`)") from None
        for key in keys:
            check_kind(key.label, key.kind)
        return cls(transport, keys)


def check_values_text(keys: list[SharedKey] | tuple[WrappedKey, ...]) -> str:
    """The check values as the destination's administrator types them: ``label=hex,label=hex``."""
    return ",".join(f"{key.label}={key.check_value}" for key in keys)


def parse_check_values(text: str, labels: list[str], named: str | None = None) -> dict[str, str]:
    """The check values given out of band, by label: ``label=hex,...`` naming every key of the
    file, or a bare hex value when the file holds one key and ``named`` is its label (the
    administrator says which key they expect: a check value covers its key's label, and the
    file's label alone would say which key that is).

    Raises: InvalidArgument: malformed, not hex, not of CHECK_VALUE_BYTES, not naming exactly the
        file's keys, or a bare value without ``named`` or for another key than ``named``.
    """
    given: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        label, equals, value = part.rpartition("=")
        if not equals:
            if len(labels) != 1 or len(text.split(",")) != 1:
                raise InvalidArgument(f"give a check value for each key of the file, as `label=hex,...`: "
                                      f"{', '.join(labels)}")
            if named is None:
                raise InvalidArgument(f"name the key the check value is for: `import {labels[0]} --check-value HEX`, "
                                      f"or `--check-value {labels[0]}=HEX`, as the source printed it")
            label = named
        label, value = label.strip(), value.strip().lower()
        try:
            bytes.fromhex(value)
        except ValueError:
            raise InvalidArgument("a check value is hexadecimal (as `signserver hsm master export` printed it)") \
                from None
        if not value:
            raise InvalidArgument(f"give the check value of {label!r}, read on the source token")
        if len(value) != 2 * CHECK_VALUE_BYTES:
            raise InvalidArgument(
                f"the check value of {label!r} has {2 * CHECK_VALUE_BYTES} hexadecimal digits, as `signserver hsm "
                "master export` printed it (the 6 that `status` shows are too short to prove the file is the "
                "source's)")
        if label in given:
            raise InvalidArgument(f"two check values for {label!r}")
        given[label] = value
    if sorted(given) != sorted(labels):
        raise InvalidArgument(f"the file holds {', '.join(labels)}; give exactly their check values "
                              f"(got {', '.join(given)})")
    return given


def fingerprint(public: rsa.RSAPublicKey) -> str:
    return hashlib.sha256(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def read_transport_key(pem: bytes, min_bits: int) -> rsa.RSAPublicKey:
    """The transport public key in ``pem``.

    Raises: InvalidArgument: not an RSA public key of at least ``min_bits`` bits."""
    try:
        public = load_pem_public_key(pem)
    except ValueError:
        raise InvalidArgument("the transport key is not a PEM public key (made by `signserver hsm master "
                              "receive-begin`)") from None
    if not isinstance(public, rsa.RSAPublicKey) or public.key_size < min_bits:
        raise InvalidArgument(f"a transport key is an RSA key of at least {min_bits} bits (hsm.transport_key_bits)")
    return public


# --- destination: the transport key pair -------------------------------------------------------

def begin_receiving(session: TokenSession, bits: int) -> TransportKey:
    """Generate a transport key pair of ``bits`` bits on the destination token, labelled
    ``signserver-transport-<n>`` (the next free n), and return its public half.

    Raises: HsmOperationFailed: the token does not know CKA_UNWRAP_TEMPLATE. HsmError.
    """
    made: list[str] = []

    def generate(s: pkcs11.Session) -> TransportKey:
        taken = {str(o[Attribute.LABEL]) for o in session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                                  Attribute.KEY_TYPE: KeyType.RSA})}
        number = 1
        while f"{TRANSPORT_LABEL_PREFIX}{number}" in taken:
            number += 1
        label = f"{TRANSPORT_LABEL_PREFIX}{number}"
        made.append(label)
        public = _generate_transport_pair(s, label, bits)
        key = rsa.RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                   int.from_bytes(public[Attribute.MODULUS], "big")).public_key()
        key_print = fingerprint(key)
        # Known by its fingerprint: the export names it, and the import finds the public half by
        # it (and the private half, which may not be modified, by its modulus).
        public[Attribute.ID] = bytes.fromhex(key_print)
        log.info("generated the transport key pair %s (SHA-256 %s)", label, key_print)
        return TransportKey(label, key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), key_print)

    try:
        return session.run(generate, "generate a transport key pair")
    except BaseException:
        # Ctrl-C included, which comes once the token's work has ended: a pair whose public half
        # nobody has only clutters the token (the caller discards it from there on).
        def destroy(s: pkcs11.Session) -> None:
            for label in made:  # one per try: run() tries again on a session it lost
                for half in session.find(s, {Attribute.LABEL: label}):
                    half.destroy()
        with contextlib.suppress(SignServerError):  # the error that came first is the one to tell
            session.run(destroy, "destroy the transport key pair")
        raise


def discard_transport_pair(session: TokenSession, transport_fingerprint: str) -> None:
    """Destroy the transport key pair of that fingerprint (its public half was never handed out).

    Raises: KeyNotFound: no such pair on this token. HsmError.
    """
    def destroy(s: pkcs11.Session) -> None:
        for half in _transport_pair(session, s, transport_fingerprint)[1]:
            half.destroy()

    session.run(destroy, "destroy the transport key pair")
    log.info("destroyed the transport key pair %s", transport_fingerprint)


def _generate_transport_pair(s: pkcs11.Session, label: str, bits: int) -> pkcs11.PublicKey:
    """The transport key pair, generated through a session of its own that can set
    CKA_UNWRAP_TEMPLATE (the user's login is the application's, so it is logged in too); returns
    the public half, as ``s`` sees it.

    Raises: HsmOperationFailed: the token does not know CKA_UNWRAP_TEMPLATE, or lost the pair's id
        and label in each attempt (see signserver/hsm/new_objects.py). pkcs11.PKCS11Error.
    """
    key_id = os.urandom(16)
    with s.token.open(rw=True, attribute_mapper=ArrayAttributeMapper()) as own:
        try:
            make_intact(lambda: own.generate_keypair(KeyType.RSA, bits, label=label, id=key_id, store=True,
                                                     public_template=dict(_TRANSPORT_PUBLIC),
                                                     private_template=dict(_TRANSPORT_PRIVATE)),
                        key_id, label, "the transport key pair")
        except p11.AttributeTypeInvalid:
            # Without the template the transport key would unwrap the file's keys readable; such a
            # token (openCryptoki 3.8's soft token) keeps no shared key copyable either.
            raise HsmOperationFailed(
                "cannot generate a transport key pair: the token does not know CKA_UNWRAP_TEMPLATE, so it cannot "
                "force the keys its transport key unwraps to stay sensitive; the key ceremony cannot copy keys "
                "to it") from None
    return next(s.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id}))


# --- source: trust the transport key, wrap the shared keys under it ---------------------------

def trust_transport_key(module: Path | None, token_label: str, so_pin: Secret, transport_pem: bytes,
                        min_bits: int, guard: PinGuard | None = None) -> str:
    """As the security officer, store the transport public key (RSA of at least ``min_bits``
    bits) on the source token marked trusted (the only key the master key may be wrapped under).
    Returns its fingerprint.

    The SO logs in through ``guard`` (the configuration's, see signserver/hsm/pin_guard.py): a
    wrong SO PIN is remembered and not tried again, and no SO login is tried while the token
    reports wrong SO tries. Without one, the PIN is tried as given.

    Call with no user session open in this process (a token has one login at a time).

    Raises: InvalidArgument (not a transport key), TokenNotFound, HsmLoginFailed (SO PIN),
        HsmLoginWithheld (the SO PIN was refused before, or the token reports wrong SO tries),
        HsmPinLocked (the SO PIN is locked), ConfigurationError (the refusals file), HsmError.
    """
    public = read_transport_key(transport_pem, min_bits)
    key_print = fingerprint(public)
    numbers = public.public_numbers()
    with pkcs11_calls():
        token = find_token(load_module(module), token_label, module)
        try:
            opened = (guard.login_so(token, so_pin) if guard is not None
                      else token.open(rw=True, so_pin=so_pin.reveal(), attribute_mapper=LabelTextMapper()))
            with opened as session:
                make_intact(lambda: (session.create_object({
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                    Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.TRUSTED: True,
                    Attribute.WRAP: True, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
                    Attribute.LABEL: TRUSTED_LABEL, Attribute.ID: bytes.fromhex(key_print),
                    Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
                    Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
                }),), bytes.fromhex(key_print), TRUSTED_LABEL, "the trusted transport key")
        except p11.PKCS11Error as exc:
            raise translate(exc, "store the trusted transport key") from exc
    log.info("the security officer marked the transport key %s trusted on token %r", key_print, token_label)
    return key_print


def describe_shared(session: TokenSession, masters: MasterKeys, sealing: SealingKey,
                    labels: list[str]) -> list[SharedKey]:
    """The keys ``labels`` name (the sealing key's label, its MAC key's, or master keys), as :func:`export_keys`
    would wrap them: checked before the security officer acts.

    Raises:
        KeyNotFound: a master key, or the sealing MAC key, is not on this token.
        InvalidArgument: a sealing key cannot be copied (made before it could be).
        HsmError.
    """
    return session.run(lambda s: [_shared(s, masters, sealing, label)[0] for label in labels],
                       "read the keys to copy")


def export_keys(session: TokenSession, masters: MasterKeys, sealing: SealingKey, labels: list[str],
                transport_fingerprint: str) -> WrappedKeys:
    """Wrap the keys ``labels`` names under the trusted transport key, then destroy that key
    (whether the wrap worked or not), and any other an export that stopped left on the token.

    Raises: KeyNotFound: no such key, or no trusted transport key of that fingerprint.
        InvalidArgument: the sealing key cannot be copied. HsmError.
    """
    def wrap(s: pkcs11.Session) -> WrappedKeys:
        trusted = session.find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                   Attribute.ID: bytes.fromhex(transport_fingerprint), Attribute.TRUSTED: True})
        if not trusted:
            raise KeyNotFound("no trusted transport key on the token: the security officer step did not run")
        try:
            wrapped = []
            for label in labels:
                shared, key = _shared(s, masters, sealing, label)
                wrapped.append(WrappedKey(label, shared.kind, shared.check_value,
                                          trusted[0].wrap_key(key, mechanism=WRAP_MECHANISM,
                                                              mechanism_param=WRAP_PARAMETER)))
        finally:
            _destroy_trusted(session, s)
        return WrappedKeys(transport_fingerprint, tuple(wrapped))

    exported = session.run(wrap, f"wrap {', '.join(labels)} for transport")
    log.info("exported %s under the transport key %s", ", ".join(labels), transport_fingerprint)
    return exported


def _shared(s: pkcs11.Session, masters: MasterKeys, sealing: SealingKey,
            label: str) -> tuple[SharedKey, pkcs11.SecretKey]:
    """Raises: KeyNotFound, InvalidArgument (no shared key's label, or a sealing key that cannot
    leave the token)."""
    kind = kind_of(label)
    if kind is None or (kind != MASTER and label not in (sealing.label, sealing.mac_label)):
        raise InvalidArgument(f"{label!r} is no key the tokens share: name a master key (signserver-master-N), "
                              f"{sealing.label} or {sealing.mac_label}")
    if kind == SEALING_MAC:
        key = sealing.mac_handle(s, create=False)
    elif kind == SEALING:
        key = sealing.handle(s)  # made now if the token has none yet: the destination then shares it from the start
    else:
        key = masters.handle(s, label)
        return SharedKey(label, MASTER, _check_value(s, MASTER, label, key)), key
    if not key[Attribute.EXTRACTABLE]:
        raise InvalidArgument(
            f"the sealing key {label!r} on this token was made before sealing keys could be copied, or on a token "
            "that cannot restrict their copies to trusted keys (it is not extractable): it cannot leave this "
            "token, and no other token can open the OTP seeds it sealed. "
            "Copy the master keys alone (`signserver hsm master export signserver-master-N`, one by one); a "
            "holder's OTP seed then opens only on the token whose server sealed it (`signserver account "
            "reset-otp` seals a new one)")
    return SharedKey(label, kind, _check_value(s, kind, label, key)), key


def _check_value(s: pkcs11.Session, kind: str, label: str, key: pkcs11.SecretKey, probe: bool = False) -> str:
    """The ceremony check value (CHECK_VALUE_BYTES, hex) of ``key`` as the ``kind`` key ``label``,
    computed in the token with what the key may do: a master key only wraps, a sealing key
    encrypts, a MAC key computes MACs; a ``probe`` (see :func:`_check_values_of`) of an AES key
    encrypts, whatever its kind.

    Raises: pkcs11.PKCS11Error.
    """
    block = check_block(kind, label)
    if kind == SEALING_MAC:
        value = key.sign(block, mechanism=Mechanism.SHA256_HMAC)
    elif kind == MASTER and not probe:
        value = encrypted_block(s, key, block)
    else:
        value = key.encrypt(block, mechanism=Mechanism.AES_ECB)
    return bytes(value)[:CHECK_VALUE_BYTES].hex()


def discard_trusted_key(session: TokenSession) -> None:
    """Destroy the trusted transport keys left on the token (an export that stopped). Raises: HsmError."""
    session.run(lambda s: _destroy_trusted(session, s), "destroy the trusted transport key")


def _destroy_trusted(session: TokenSession, s: pkcs11.Session) -> None:
    """Every transport key the security officer marked trusted, whichever destination's: each
    lets the token's user wrap the shared keys for that destination, and an export that stopped
    (Ctrl-C, a crash) may have left one. A key only labelled so is not one (the user may give a
    key pair of their own any label). Raises: pkcs11.PKCS11Error."""
    for key in session.find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: TRUSTED_LABEL,
                                Attribute.TRUSTED: True}):
        key.destroy()


# --- destination: unwrap, check, destroy the transport key pair -------------------------------

def import_keys(session: TokenSession, wrapped: WrappedKeys, expected_check_values: str,
                named: str | None = None) -> list[ImportedKey]:
    """Check every key of the file against the check value the source read out (which covers its
    label and kind, the kind following from the label), store the ones
    the token lacks (a key it already holds with that check value is left as it is), and destroy
    the transport key pair. All or nothing: any key whose check value differs, or whose label the
    token holds for another key, and nothing is stored (and the transport key pair stays, for a
    new export).

    ``named``: the key a bare check value is for (see :func:`parse_check_values`).

    Raises:
        InvalidArgument: the check values are malformed or do not name the file's keys; a key's
            kind is not the one its label names.
        KeyNotFound: the transport key pair is not on this token (another token's file, or used).
        DataCorrupted: the file does not unwrap, or a key's check value differs.
        AlreadyExists: the token holds another key under one of the labels.
        HsmError.
    """
    for key in wrapped.keys:  # a file read by WrappedKeys.from_bytes is checked already
        check_kind(key.label, key.kind)
    expected = parse_check_values(expected_check_values, wrapped.labels, named)

    def unwrap(s: pkcs11.Session) -> list[ImportedKey]:
        private, pair = _transport_pair(session, s, wrapped.transport_fingerprint)
        received = [(key, *_check_values_of(s, private, key)) for key in wrapped.keys]
        for key, check_value, _usual in received:
            if check_value != expected[key.label]:
                raise DataCorrupted(f"the wrapped key {key.label!r} has the check value {check_value}, not "
                                    f"{expected[key.label]}: it is not the source's {key.kind} key; nothing was "
                                    "imported")
        imported = [ImportedKey(key.label, key.kind, check_value, stored=not _held(s, session, key, check_value))
                    for key, check_value, _usual in received]
        stored: list[pkcs11.SecretKey] = []
        try:
            for (key, _check_value, usual), outcome in zip(received, imported):
                if outcome.stored:
                    stored.append(_store(private, key, usual))
        except BaseException:
            for key in stored:  # all or nothing
                key.destroy()
            raise
        for half in pair:
            half.destroy()
        return imported

    imported = session.run(unwrap, f"import {', '.join(wrapped.labels)}")
    for key in imported:
        log.info("%s the %s key %s (check value %s)", "imported" if key.stored else "already held", key.kind,
                 key.label, key.check_value)
    log.info("the transport key pair %s is destroyed", wrapped.transport_fingerprint)
    return imported


def _transport_pair(session: TokenSession, s: pkcs11.Session,
                    transport_fingerprint: str) -> tuple[pkcs11.PrivateKey, list[pkcs11.Object]]:
    """The transport private key of that fingerprint, and both halves of its pair. The public
    half carries the fingerprint as its CKA_ID; the private half is found by its modulus (pairs
    made by earlier versions carry the fingerprint as CKA_ID too).

    Raises: KeyNotFound: no such pair on this token. pkcs11.PKCS11Error.
    """
    for public in session.find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                                   Attribute.ID: bytes.fromhex(transport_fingerprint)}):
        private = session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                                   Attribute.MODULUS: public[Attribute.MODULUS]})
        if private:
            return private[0], [public, *private]
    raise KeyNotFound("this token holds no transport key for this file: it was wrapped for another token, "
                      "or its transport key was used and destroyed (start again with `receive-begin`)")


def _held(s: pkcs11.Session, session: TokenSession, key: WrappedKey, check_value: str) -> bool:
    """Whether the token already holds this very key.

    Raises: AlreadyExists: it holds another key under that label.
    """
    found = session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key.label})
    if not found:
        return False
    try:
        held = _check_value(s, key.kind, key.label, found[0])
    except p11.PKCS11Error:  # a key of another kind, or one that may not do what the check needs
        held = ""
    if held and held == check_value:
        return True
    consequence = ("storing the source's would make the OTP seeds sealed here unreadable; start the "
                   "destination's server only after the key ceremony" if key.kind in (SEALING, SEALING_MAC)
                   else "it is not the source's key. A key a rotation on this token left, one the database never "
                   "recorded or records with another check value (`signserver hsm master status` shows it as "
                   "unrecorded, or as a different key), is destroyed by `signserver hsm master retire --orphans` "
                   "run on this token")
    raise AlreadyExists(f"the token already holds another key labelled {key.label!r} (check value "
                        f"{held or 'unknown'}): {consequence}. Nothing was imported")


def _store(transport_private: pkcs11.PrivateKey, key: WrappedKey,
           usual_check_value: str | None) -> pkcs11.SecretKey:
    key_id = os.urandom(16)
    stored, = make_intact(
        lambda: (transport_private.unwrap_key(ObjectClass.SECRET_KEY, _KEY_TYPES[key.kind], key.wrapped,
                                              label=key.label, id=key_id, mechanism=WRAP_MECHANISM,
                                              mechanism_param=WRAP_PARAMETER, store=True,
                                              template=dict(_TEMPLATES[key.kind])),),
        key_id, key.label, f"the imported {key.kind} key")
    if usual_check_value is not None:  # a MAC key's check value is computed, never stored
        # SoftHSM gives an unwrapped key no check value (and refuses one in the template): record
        # the one the token computed (the usual 3 bytes), which servers compare.
        stored[Attribute.CHECK_VALUE] = bytes.fromhex(usual_check_value)
    return stored


def _check_values_of(s: pkcs11.Session, transport_private: pkcs11.PrivateKey,
                     key: WrappedKey) -> tuple[str, str | None]:
    """The wrapped key's ceremony check value (see :func:`check_block`) and, for an AES key, its usual one
    (the first 3 bytes of its encryption of a zero block), computed in the token: a session copy
    able only to encrypt (or to compute MACs) is unwrapped, used once and destroyed, since a master
    key itself may not encrypt.

    Raises: DataCorrupted: the file does not unwrap (altered, or wrapped for another key).
    """
    is_mac = key.kind == SEALING_MAC
    try:
        probe = transport_private.unwrap_key(ObjectClass.SECRET_KEY, _KEY_TYPES[key.kind], key.wrapped,
                                             mechanism=WRAP_MECHANISM, mechanism_param=WRAP_PARAMETER, store=False,
                                             template=dict(_MAC_CHECK_PROBE if is_mac else _CHECK_PROBE))
    except (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.EncryptedDataInvalid, p11.GeneralError):
        raise DataCorrupted("a wrapped key does not unwrap: the file was altered") from None
    try:
        ceremony = _check_value(s, key.kind, key.label, probe, probe=True)
        usual = None if is_mac else bytes(probe.encrypt(_ZERO_BLOCK, mechanism=Mechanism.AES_ECB))[:3].hex()
        return ceremony, usual
    finally:
        probe.destroy()
