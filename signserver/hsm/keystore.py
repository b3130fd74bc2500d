"""HsmKeyStore: key pairs generated, kept and used inside the HSM."""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

import pkcs11
from asn1crypto.core import Integer, OctetString, PrintableString
from asn1crypto.keys import ECDomainParameters
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from signserver.errors import AlreadyExists, InvalidArgument, KeyNotFound, UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm, KeyAttributes, SignatureAlgorithm
from signserver.hsm.new_objects import make_intact
from signserver.hsm.session import TokenDescription, TokenSession

log = logging.getLogger(__name__)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_LABEL_MAX = 64
_KEY_ID_RE = re.compile(r"^[0-9a-f]{2,128}$")


@dataclass(frozen=True)
class KeyInfo:
    """A private key on the token and what the token says about it."""

    key_id: str  # CKA_ID in lowercase hex
    label: str
    algorithm: KeyAlgorithm | None  # None: a key type signserver does not use
    size: int | None  # bits (the curve's size for EC keys)
    attributes: KeyAttributes


def check_label(label: str) -> str:
    """Raises: InvalidArgument: the label is empty, too long, not text or has control or formatting
    characters."""
    if not label or not label.strip():
        raise InvalidArgument("a key label must not be empty")
    check_text(label, "a key label")
    if len(label) > _LABEL_MAX:
        raise InvalidArgument(f"a key label has at most {_LABEL_MAX} characters")
    # Cc and Cf: C0 and C1 controls, DEL, and the formatting characters (a bidirectional override
    # would reverse the rest of a listing's line).
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in label):
        raise InvalidArgument("a key label must not contain control or formatting characters")
    return label


def check_text(value: str, what: str) -> str:
    """Refuse what a PKCS#11 call cannot take as a label: a string that is not UTF-8 text (a
    byte in another encoding reaches Python as a lone surrogate).

    Raises: InvalidArgument.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} must be valid UTF-8 text") from None
    return value


def check_key_id(key_id: str) -> bytes:
    """Raises: InvalidArgument: not an even-length hex string of 1 to 64 bytes."""
    normalised = key_id.strip().lower()
    if not _KEY_ID_RE.match(normalised) or len(normalised) % 2:
        raise InvalidArgument(f"a key id is 1 to 64 bytes in hex, not {key_id[:80]!r}")
    return bytes.fromhex(normalised)


class HsmKeyStore:
    """Generates key pairs in the HSM, finds, lists and deletes them, and signs with them.

    Private keys are created with CKA_TOKEN, CKA_PRIVATE and CKA_SENSITIVE true and
    CKA_EXTRACTABLE false, so the token marks them never extractable. Each key has a random
    16-byte CKA_ID and a label unique on the token. Key handles are cached per session.
    All calls are thread-safe: they go through the token session's process-wide lock.
    """

    def __init__(self, session: TokenSession):
        self._session = session

    @property
    def session(self) -> TokenSession:
        """The token session, shared with the other users of this token (sealing key, ...)."""
        return self._session

    def close(self) -> None:
        """Log out and close the session; the next call opens a new one."""
        self._session.close()

    # --- token ------------------------------------------------------------------------

    def describe_token(self) -> TokenDescription:
        """The token's label, model and mechanisms. Raises: HsmError, TokenNotFound."""
        return self._session.describe()

    def ping(self) -> None:
        """Ask the token for random bytes through the logged-in session.

        Raises: HsmError: the token does not answer. TokenNotFound: it is gone.
        """
        self._session.run(lambda s: s.generate_random(64), "reach the token")

    # --- keys -------------------------------------------------------------------------

    def generate(self, algorithm: KeyAlgorithm, label: str) -> KeyInfo:
        """Generate a key pair inside the HSM and return its description.

        Raises:
            InvalidArgument: the label is invalid.
            AlreadyExists: a key with that label exists.
            UnsupportedAlgorithm: the token cannot generate that kind of key.
            HsmOperationFailed: the token lost the pair's id and label in each attempt (see
                signserver/hsm/new_objects.py).
            HsmError: the token failed.
        """
        check_label(label)
        key_id = os.urandom(16)

        def generate(session: pkcs11.Session) -> KeyInfo:
            if self._find_private(session, label=label) is not None:
                raise AlreadyExists(f"a key labelled {label!r} already exists on the token")
            _, private = make_intact(lambda: _generate_pair(session, algorithm, key_id, label), key_id, label,
                                     f"the {algorithm.value} key pair")
            return _describe(private)

        info = self._session.run(generate, f"generate a {algorithm.value} key {label!r}")
        log.info("generated %s key %s (%r) in the HSM", algorithm.value, info.key_id, label)
        return info

    def get(self, key_id: str) -> KeyInfo:
        """Raises: InvalidArgument, KeyNotFound, HsmError."""
        raw_id = check_key_id(key_id)
        return self._session.run(lambda s: _describe(self._private(s, raw_id)), f"read key {key_id}")

    def label_of(self, key_id: str) -> str:
        """The private key's label, read once per session and cached with its handle: signing
        paths check it on every signature.

        Raises: InvalidArgument, KeyNotFound, HsmError.
        """
        raw_id = check_key_id(key_id)

        def read(session: pkcs11.Session) -> str:
            cache_key = ("label", raw_id)
            if cache_key not in self._session.cache:
                self._session.cache[cache_key] = self._private(session, raw_id)[Attribute.LABEL] or ""
            return self._session.cache[cache_key]

        return self._session.run(read, f"read the label of key {key_id}")

    def find_by_label(self, label: str) -> KeyInfo:
        """Raises: KeyNotFound: no key has that label. InvalidArgument: the label is not text. HsmError."""
        check_text(label, "a key label")

        def find(session: pkcs11.Session) -> KeyInfo:
            key = self._find_private(session, label=label)
            if key is None:
                raise KeyNotFound(f"no key labelled {label!r} on the token")
            info = _describe(key)
            # Kept by id, as a search by id would: the caller's next step is usually to use it.
            self._session.cache.setdefault((ObjectClass.PRIVATE_KEY, bytes.fromhex(info.key_id)), key)
            return info
        return self._session.run(find, f"find key {label!r}")

    def resolve(self, reference: str) -> KeyInfo:
        """Find a key by label, or by id when no label matches (for people typing commands).

        Raises: KeyNotFound, InvalidArgument (the reference is not text), HsmError.
        """
        check_text(reference, "a key label or id")
        try:
            return self.find_by_label(reference)
        except KeyNotFound:
            try:
                return self.get(reference)
            except InvalidArgument:
                raise KeyNotFound(f"no key labelled {reference!r} on the token") from None

    def list(self) -> list[KeyInfo]:
        """All private keys on the token, sorted by label. Raises: HsmError."""
        def list_keys(session: pkcs11.Session) -> list[KeyInfo]:
            keys = self._session.find(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            return sorted((_describe(k) for k in keys), key=lambda k: (k.label, k.key_id))
        return self._session.run(list_keys, "list the keys")

    def delete(self, key_id: str) -> None:
        """Destroy the key pair (and any certificate stored with the same CKA_ID).

        Raises: InvalidArgument, KeyNotFound, HsmError.
        """
        raw_id = check_key_id(key_id)

        def delete(session: pkcs11.Session) -> None:
            self._private(session, raw_id)  # raises KeyNotFound
            for obj in self._session.find(session, {Attribute.ID: raw_id}):
                obj.destroy()
            # Only this key's entries: the other keys' handles stay good, and finding them again
            # would cost a search each.
            for cache_key in [k for k in self._session.cache if _names_key(k, raw_id)]:
                del self._session.cache[cache_key]

        self._session.run(delete, f"delete key {key_id}")
        log.info("deleted key %s from the HSM", key_id)

    def delete_unnamed(self) -> int:
        """Destroy the token's key objects that have neither a label nor an id and whose kind cannot
        be read (their modulus, curve or point missing or unreadable): what SoftHSM leaves of a key
        pair whose generation another process's search interrupted. signserver names every key it
        makes, so none of its keys is among them; a generation under way at this moment may be, and
        then fails (its command can be run again). Complete keys of kinds signserver does not use
        (RSA-1024, secp256k1, DSA, ...), which other applications may keep unnamed on the same
        token, are never among them. Returns how many objects were destroyed.

        Raises: HsmError.
        """
        def delete(session: pkcs11.Session) -> int:
            found = [key for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                     for key in self._session.find(session, {Attribute.CLASS: object_class, Attribute.TOKEN: True})
                     if _unnamed_and_unreadable(key)]
            for key in found:
                key.destroy()
            return len(found)

        destroyed = self._session.run(delete, "delete the unnamed key objects")
        if destroyed:
            log.warning("destroyed %d unnamed key objects that a key generation left half-made", destroyed)
        return destroyed

    def public_key(self, key_id: str) -> PublicKey:
        """The public key as a ``cryptography`` object (``public_bytes`` gives SPKI DER/PEM).

        Raises: InvalidArgument, KeyNotFound, HsmError.
        """
        raw_id = check_key_id(key_id)

        def read(session: pkcs11.Session) -> PublicKey:
            cache_key = ("public", raw_id)
            if cache_key not in self._session.cache:
                private = self._private(session, raw_id)
                algorithm = _algorithm_of(private)
                public = self._find(session, ObjectClass.PUBLIC_KEY, raw_id)
                if public is None:
                    raise KeyNotFound(f"the public half of key {key_id} is not on the token")
                self._session.cache[cache_key] = _public_key(public, algorithm)
            return self._session.cache[cache_key]

        return self._session.run(read, f"read the public key of {key_id}")

    def public_keys(self, keys: Iterable[KeyInfo]) -> dict[str, PublicKey]:
        """The public keys of ``keys`` (private keys as :meth:`list` describes them), by key id,
        read in one search of the token however many they are: a search walks every object of the
        token, so one search per key would cost the token's size for each. A key whose public half
        is not on the token, is of a kind signserver does not use, or is damaged, is left out.

        Raises: HsmError.
        """
        wanted = {bytes.fromhex(key.key_id): key.algorithm for key in keys if key.key_id}
        if not wanted:
            return {}

        def read(session: pkcs11.Session) -> dict[str, PublicKey]:
            found: dict[str, PublicKey] = {}
            for public in self._session.find(session, {Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
                try:
                    raw_id = public[Attribute.ID]
                except pkcs11.exceptions.AttributeTypeInvalid:
                    continue  # not one of signserver's keys, which all have an id
                if raw_id not in wanted or raw_id.hex() in found:
                    continue
                try:
                    found[raw_id.hex()] = _public_key(public, wanted[raw_id])
                except UnsupportedAlgorithm:
                    continue
            return found

        return self._session.run(read, "read the public keys")

    def store_certificate(self, key_id: str, certificate: x509.Certificate) -> None:
        """Store ``certificate`` on the token beside its key (same CKA_ID and label),
        replacing a certificate stored there before.

        Raises:
            InvalidArgument: the certificate's public key is not the key's.
            KeyNotFound, HsmError.
        """
        raw_id = check_key_id(key_id)
        public = self.public_key(key_id)
        if certificate.public_key() != public:
            raise InvalidArgument(f"the certificate's public key is not the public key of key {key_id}")
        label = self.get(key_id).label

        def store(session: pkcs11.Session) -> None:
            for old in self._session.find(session, {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: raw_id}):
                old.destroy()
            make_intact(lambda: (session.create_object(_certificate_template(raw_id, label, certificate)),), raw_id,
                        label, "the certificate")

        self._session.run(store, f"store a certificate for key {key_id}")
        log.info("stored certificate serial %x beside key %s", certificate.serial_number, key_id)

    def certificate(self, key_id: str) -> x509.Certificate | None:
        """The certificate stored beside the key, if any. Raises: InvalidArgument, HsmError."""
        raw_id = check_key_id(key_id)

        def read(session: pkcs11.Session) -> x509.Certificate | None:
            found = self._session.find(session, {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: raw_id})
            return x509.load_der_x509_certificate(found[0][Attribute.VALUE]) if found else None

        return self._session.run(read, f"read the certificate of key {key_id}")

    # --- signing ----------------------------------------------------------------------

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SignatureAlgorithm) -> bytes:
        """Sign a precomputed digest (or, for Ed25519, the message itself) inside the HSM.

        Returns the signature in its standard encoding: PKCS#1 or PSS bytes for RSA, DER
        ``(r, s)`` for ECDSA, 64 bytes for Ed25519.

        Raises:
            InvalidArgument: the digest's length does not match the algorithm.
            UnsupportedAlgorithm: the algorithm does not fit the key.
            KeyNotFound, HsmError.
        """
        raw_id = check_key_id(key_id)
        token_input = algorithm.token_input(digest)
        mechanism, parameter = algorithm.mechanism()

        def sign(session: pkcs11.Session) -> bytes:
            private = self._private(session, raw_id)
            key_algorithm = self._algorithm_cached(private, raw_id)
            if key_algorithm is None:
                raise UnsupportedAlgorithm(f"key {key_id} is of a type signserver does not use")
            algorithm.check_key(key_algorithm)
            return private.sign(token_input, mechanism=mechanism, mechanism_param=parameter)

        raw = self._session.run(sign, f"sign with key {key_id}")
        return algorithm.encode_token_output(raw)

    def sign_data(self, key_id: str, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        """Hash ``data`` here (Ed25519: pass it whole) and sign inside the HSM.

        Raises: as :meth:`sign_digest`.
        """
        digest = algorithm.hash.digest(data) if algorithm.hash else data
        return self.sign_digest(key_id, digest, algorithm)

    # --- lookups (run inside a session operation) -------------------------------------

    def _private(self, session: pkcs11.Session, raw_id: bytes) -> pkcs11.PrivateKey:
        key = self._find(session, ObjectClass.PRIVATE_KEY, raw_id)
        if key is None:
            raise KeyNotFound(f"no key with id {raw_id.hex()} on the token")
        return key

    def _find(self, session: pkcs11.Session, object_class: ObjectClass, raw_id: bytes):
        cache_key = (object_class, raw_id)
        cached = self._session.cache.get(cache_key)
        if cached is None:
            found = self._session.find(session, {Attribute.CLASS: object_class, Attribute.ID: raw_id})
            if not found:
                return None
            cached = self._session.cache[cache_key] = found[0]
        return cached

    def _find_private(self, session: pkcs11.Session, label: str) -> pkcs11.PrivateKey | None:
        found = self._session.find(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
        return found[0] if found else None

    def _algorithm_cached(self, private: pkcs11.PrivateKey, raw_id: bytes) -> KeyAlgorithm | None:
        cache_key = ("algorithm", raw_id)
        if cache_key not in self._session.cache:
            self._session.cache[cache_key] = _algorithm_of(private)
        return self._session.cache[cache_key]


# --- PKCS#11 details -----------------------------------------------------------------------

_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: False,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}


def _generate_pair(session: pkcs11.Session, algorithm: KeyAlgorithm, key_id: bytes, label: str):
    common = dict(id=key_id, label=label, store=True, mechanism=algorithm.generation_mechanism,
                  public_template=dict(_PUBLIC_TEMPLATE), private_template=dict(_PRIVATE_TEMPLATE))
    if algorithm.family == "rsa":
        common["public_template"][Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
        return session.generate_keypair(KeyType.RSA, algorithm.size, **common)
    parameters = session.create_domain_parameters(
        algorithm.key_type,
        {Attribute.EC_PARAMS: encode_named_curve_parameters(algorithm.curve_oid)},
        local=True,
    )
    return parameters.generate_keypair(**common)


def _algorithm_of(key: pkcs11.Key) -> KeyAlgorithm | None:
    """The key's algorithm; None for a kind signserver does not use, and for a key whose curve
    cannot be read: a key generation cut short by a crash leaves such objects on a token, and
    listing the token's keys must still work with them there."""
    if key.key_type == KeyType.RSA:
        return KeyAlgorithm.from_rsa_bits(len(key[Attribute.MODULUS]) * 8)
    if key.key_type not in (KeyType.EC, KeyType.EC_EDWARDS):
        return None
    params = key[Attribute.EC_PARAMS]
    try:
        if params[:1] == b"\x13":
            # SoftHSM stores Edwards curves by name, as a PrintableString ("edwards25519").
            name = PrintableString.load(params).native
            return KeyAlgorithm.ED25519 if name == "edwards25519" else None
        parsed = ECDomainParameters.load(params)
        return KeyAlgorithm.from_curve_oid(parsed.chosen.dotted) if parsed.name == "named" else None
    except ValueError:
        return None


def _unnamed_and_unreadable(key: pkcs11.Key) -> bool:
    """Whether the key object has no label, no id and a kind that cannot be read (see
    HsmKeyStore.delete_unnamed)."""
    attrs = key.get_attributes([Attribute.ID, Attribute.LABEL])
    return not attrs.get(Attribute.ID) and not attrs.get(Attribute.LABEL) and _half_made(key)


def _half_made(key: pkcs11.Key) -> bool:
    """Whether the key object lacks the public material every key of its type has, or holds some
    that cannot be read: an RSA key's modulus; an EC or Edwards key's curve, and a public key's
    point. Not whether signserver uses its kind: a complete key of another kind (RSA-1024,
    secp256k1) is not half-made, nor is a key of a type whose material is not checked here.

    Raises: pkcs11.PKCS11Error: the token failed otherwise than lacking the attribute.
    """
    try:
        if key.key_type == KeyType.RSA:
            return not key[Attribute.MODULUS]
        if key.key_type not in (KeyType.EC, KeyType.EC_EDWARDS):
            return False
        if not _curve_readable(key[Attribute.EC_PARAMS]):
            return True
        return isinstance(key, pkcs11.PublicKey) and not _point(key[Attribute.EC_POINT])
    except pkcs11.AttributeTypeInvalid:  # the object has no such attribute
        return True


def _curve_readable(params: bytes | None) -> bool:
    """Whether CKA_EC_PARAMS names, specifies or inherits a curve, whichever: a curve signserver
    does not use is still a curve."""
    if not params:
        return False
    try:
        if params[:1] == b"\x13":  # a curve's name, as SoftHSM stores Edwards curves
            return bool(PrintableString.load(params).native)
        parsed = ECDomainParameters.load(params)
        if parsed.name == "named":
            return bool(parsed.chosen.dotted)
        parsed.native  # parses the whole value: a curve specified by its numbers
    except ValueError:
        return False
    return True


def _point(value: bytes | None) -> bytes:
    """CKA_EC_POINT's point: a DER OCTET STRING, or the raw point a few tokens store (whose first
    byte, 04 for an uncompressed point, may read as the start of one: only a whole one counts)."""
    if not value:
        return b""
    try:
        return OctetString.load(value, strict=True).native or b""
    except ValueError:
        return value


def _describe(key: pkcs11.PrivateKey) -> KeyInfo:
    attrs = key.get_attributes([
        Attribute.ID, Attribute.LABEL, Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE,
        Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE, Attribute.NEVER_EXTRACTABLE,
    ])
    algorithm = _algorithm_of(key)
    return KeyInfo(
        key_id=(attrs.get(Attribute.ID) or b"").hex(),
        label=attrs.get(Attribute.LABEL) or "",
        algorithm=algorithm,
        size=algorithm.size if algorithm else None,
        attributes=KeyAttributes(
            token=bool(attrs.get(Attribute.TOKEN)),
            private=bool(attrs.get(Attribute.PRIVATE)),
            sensitive=bool(attrs.get(Attribute.SENSITIVE)),
            extractable=bool(attrs.get(Attribute.EXTRACTABLE)),
            always_sensitive=bool(attrs.get(Attribute.ALWAYS_SENSITIVE)),
            never_extractable=bool(attrs.get(Attribute.NEVER_EXTRACTABLE)),
        ),
    )


def _public_key(key: pkcs11.PublicKey, algorithm: KeyAlgorithm | None) -> PublicKey:
    """The public-key object's key as a ``cryptography`` object.

    Raises: UnsupportedAlgorithm: a kind of key signserver does not use, or an object whose
        numbers or point are not a key of its algorithm (damaged, as a crash can leave it).
    """
    if algorithm is None:
        raise UnsupportedAlgorithm("the key is of a type signserver does not use")
    try:
        if algorithm.family == "rsa":
            return rsa.RSAPublicNumbers(int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
                                        int.from_bytes(key[Attribute.MODULUS], "big")).public_key()
        point = key[Attribute.EC_POINT]
        # CKA_EC_POINT is a DER OCTET STRING; a few tokens store the raw point instead.
        try:
            point = OctetString.load(point).native
        except ValueError:
            pass
        if algorithm.family == "ec":
            return ec.EllipticCurvePublicKey.from_encoded_point(algorithm.ec_curve, point)
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    except ValueError:
        raise UnsupportedAlgorithm(f"the public key object is not a {algorithm.value} key: "
                                   "the object is damaged") from None


def _certificate_template(key_id: bytes, label: str, certificate) -> dict:
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.ID: key_id,
        Attribute.LABEL: label,
        Attribute.SUBJECT: certificate.subject.public_bytes(),
        Attribute.ISSUER: certificate.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: _der_integer(certificate.serial_number),
        Attribute.VALUE: certificate.public_bytes(Encoding.DER),
    }


def _der_integer(value: int) -> bytes:
    return Integer(value).dump()


def _names_key(cache_key, raw_id: bytes) -> bool:
    """Whether a session cache entry is about the key ``raw_id`` (entries are (kind, id) pairs,
    the id raw or in hex)."""
    return (isinstance(cache_key, tuple) and len(cache_key) == 2
            and cache_key[1] in (raw_id, raw_id.hex()))


def public_key_of(key: pkcs11.PublicKey, algorithm: KeyAlgorithm) -> PublicKey:
    """A public-key object's key as a ``cryptography`` object (session objects included).

    Raises: UnsupportedAlgorithm: a key type signserver does not use.
    """
    return _public_key(key, algorithm)
