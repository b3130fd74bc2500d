"""PackageKeys: holder keys that live outside the token, wrapped, and inside it only to sign.

A holder key pair is generated as session objects, its private half wrapped at once by a fresh
AES-256 package key, the package key wrapped by a master key (signserver/hsm/master_keys.py), and
both session objects destroyed: the token keeps no object per holder, and no private key ever
exists outside it in clear. Two wraps rather than one, so that a master key can be rotated by
re-wrapping the 40-byte package key alone, while the wrapped private key stays sealed to its
holder (signserver/accounts/packages.py): the database and the token's PIN without the holder's
password open neither.

To sign, the package key is unwrapped (able only to unwrap), the private key unwrapped with it
(sensitive, never extractable, able only to sign), and the package key destroyed. The private
key's handle is kept for the activation token it was opened for, in this process's session, and
destroyed once the token's last digest is spent and every call of this process that spent one of
them has signed (see :meth:`PackageKeys.expect`), when the token expires, or when more are kept
than MAX_OPEN.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as p11
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from signserver.errors import DataCorrupted, HsmOperationFailed, UnsupportedAlgorithm
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.capabilities import TokenCapabilities
from signserver.hsm.keystore import public_key_of
from signserver.hsm.master_keys import MasterKeys
from signserver.hsm.session import TokenSession
from signserver.hsm.trusted_export import warn_once

log = logging.getLogger(__name__)

MAX_OPEN = 256  # unwrapped holder keys kept per process, each for its activation token's life
# How long past its token's expiry a call that spent the token may still take to sign (a document's
# time-stamp and revocation data come first): its key stays open for it that long at most.
SIGNING_GRACE = datetime.timedelta(minutes=5)
# Keys of expired tokens are looked for at a signature, at most this often (a walk of the session's
# cache: too much for every signature).
SWEEP_INTERVAL = datetime.timedelta(seconds=1)

# Key-wrap mechanisms by preference, with the name recorded beside what they wrapped (so that what
# was wrapped before keeps opening when the preference changes).
#
# AES-CBC-PAD is for tokens without AES key wrap (openCryptoki's soft token); its random IV is
# stored in front of the wrapped bytes. Unlike RFC 5649's key wrap it authenticates nothing, so the
# token cannot tell an altered blob from a genuine one. What does: the wrapped private key reaches
# the token only out of the holder's AEAD seal (signserver/accounts/holder_seal.py, AES-GCM in
# Python), which no one without the holder opens or forges; the package key is useful only inside
# the token (unwrap only, sensitive, not extractable) under a master key that never leaves it in
# clear; and every failed unwrap reads as the same DataCorrupted, so no caller learns whether the
# padding or the key was wrong.
WRAP_MECHANISMS = {"aes-key-wrap-pad": Mechanism.AES_KEY_WRAP_PAD, "aes-cbc-pad": Mechanism.AES_CBC_PAD}
WRAP_PREFERENCES = [(name, (mechanism,)) for name, mechanism in WRAP_MECHANISMS.items()]
IV_BYTES = 16  # the AES block: the IV in front of what AES-CBC-PAD wrapped


@dataclass(frozen=True)
class WrappedKey:
    """A holder key as the token hands it out: useless without the master key."""

    algorithm: KeyAlgorithm
    public_key_der: bytes  # SubjectPublicKeyInfo
    wrapped_private: bytes  # the private key, wrapped by the package key
    wrapped_package_key: bytes  # the package key, wrapped by the master key
    master_label: str
    mechanism: str  # a key of WRAP_MECHANISMS


@dataclass(frozen=True)
class KeyToOpen:
    """What unwrapping a holder key for one activation token takes."""

    handle_id: str  # the activation token's hash: one open key per token
    algorithm: KeyAlgorithm
    wrapped_private: bytes
    wrapped_package_key: bytes
    master_label: str
    mechanism: str
    expires_at: datetime.datetime


class KeyNotOpen(Exception):
    """No key is open here for that activation token: load what unwrapping it takes and try again."""


@dataclass
class _OpenKey:
    key: pkcs11.PrivateKey
    algorithm: KeyAlgorithm
    expires_at: datetime.datetime


@dataclass
class _Expected:
    """Signatures that calls of this process will make with the key of one activation token."""

    signatures: int  # spent by those calls, not signed yet
    until: datetime.datetime  # forgotten then, whatever became of them
    exhausted: bool = False  # the token's last digest is spent: once these are made, nothing needs the key


_PACKAGE_KEY_TEMPLATE = {  # generated to wrap one private key, then wrapped and destroyed
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
    Attribute.WRAP: True, Attribute.UNWRAP: False, Attribute.ENCRYPT: False, Attribute.DECRYPT: False,
}
_UNWRAPPED_PACKAGE_KEY = {  # unwrapped to unwrap one private key, then destroyed
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
}
_REWRAPPED_PACKAGE_KEY = {  # unwrapped only to be wrapped again under another master key
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
}
_NEW_PRIVATE = {  # extractable only until wrapped, a moment later, and then destroyed
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
    Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False,
}
_NEW_PUBLIC = {Attribute.TOKEN: False, Attribute.PRIVATE: False, Attribute.VERIFY: True,
               Attribute.ENCRYPT: False, Attribute.WRAP: False}
# python-pkcs11 fills an unwrapped key's template from its capabilities; the public-key-only ones
# must be left to the token or it refuses the template (AttributeTypeInvalid).
_UNWRAPPED_PRIVATE = {
    Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: pkcs11.DEFAULT, Attribute.VERIFY: pkcs11.DEFAULT, Attribute.WRAP: pkcs11.DEFAULT,
    Attribute.DERIVE: pkcs11.DEFAULT,
}


def choose_wrap_mechanism(capabilities: TokenCapabilities) -> str:
    """The best key-wrap mechanism the token offers, by its recorded name.

    Raises: UnsupportedAlgorithm: the token offers none that wraps private keys.
    """
    return capabilities.choose(WRAP_PREFERENCES, "keeping holder keys as signing data packages (key wrap)")


def wrap(wrapping_key: pkcs11.SecretKey, key: pkcs11.Key, name: str) -> bytes:
    """``key`` wrapped by ``wrapping_key`` with the mechanism recorded as ``name`` (an IV in front
    for AES-CBC-PAD); call inside :meth:`TokenSession.run`. Raises: pkcs11.PKCS11Error."""
    mechanism = WRAP_MECHANISMS[name]
    if mechanism is Mechanism.AES_CBC_PAD:
        iv = os.urandom(IV_BYTES)
        return iv + wrapping_key.wrap_key(key, mechanism=mechanism, mechanism_param=iv)
    return wrapping_key.wrap_key(key, mechanism=mechanism)


def unwrap_parameters(name: str, wrapped: bytes) -> tuple[Mechanism, bytes | None, bytes]:
    """The mechanism, its parameter and the bytes to unwrap, for what ``wrap`` made as ``name``.

    Raises: DataCorrupted: an unknown name, or too short to hold an IV and a block.
    """
    mechanism = WRAP_MECHANISMS.get(name)
    if mechanism is None:
        raise DataCorrupted(f"a signing data package names an unknown wrap mechanism {name!r}")
    if mechanism is Mechanism.AES_CBC_PAD:
        if len(wrapped) < 2 * IV_BYTES:
            raise DataCorrupted("a signing data package is truncated: it was altered")
        return mechanism, wrapped[:IV_BYTES], wrapped[IV_BYTES:]
    return mechanism, None, wrapped


def protect_unwrapped(key: pkcs11.Key, extractable: bool) -> None:
    """Make sure an unwrapped key is sensitive, and not extractable unless ``extractable``.

    Some tokens ignore CKA_SENSITIVE and CKA_EXTRACTABLE in C_UnwrapKey's template (openCryptoki
    3.8's soft token hands out a sensitive key unwrapped as not sensitive and extractable): they are
    set after the unwrap when the key lacks them, and read back, so that no key leaves here
    readable. Call inside :meth:`TokenSession.run`.

    Raises: HsmOperationFailed (the key destroyed): the token would not make the key sensitive.
        pkcs11.PKCS11Error.
    """
    wanted = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable}
    try:
        current = {attribute: bool(key[attribute]) for attribute in wanted}
        if current == wanted:
            return
        warn_once("the token did not apply CKA_SENSITIVE / CKA_EXTRACTABLE from an unwrap template; they "
                   "are set on every unwrapped key afterwards")
        try:
            for attribute, value in wanted.items():  # sensitive first: PKCS#11 forbids clearing it
                if current[attribute] != value:
                    key[attribute] = value
            protected = all(bool(key[attribute]) == value for attribute, value in wanted.items())
        except (p11.AttributeReadOnly, p11.AttributeValueInvalid, p11.TemplateInconsistent):
            protected = False
    except BaseException:
        key.destroy()  # whatever went wrong, no key that may be readable stays in the session
        raise
    if not protected:
        key.destroy()
        raise HsmOperationFailed("the token cannot make an unwrapped key sensitive and non-extractable: holder "
                                 "keys are not opened on it")


class PackageKeys:
    """Makes, opens, signs with and re-wraps holder keys kept as wrapped packages."""

    def __init__(self, session: TokenSession, masters: MasterKeys):
        self._session = session
        self._masters = masters
        self._mechanism: str | None = None
        self._expected: dict[str, _Expected] = {}  # by handle id
        self._finished: set[str] = set()  # handle ids whose keys nothing needs, to close at the next sign
        self._next_sweep = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
        self._expected_lock = threading.Lock()  # taken by callers outside the PKCS#11 lock too

    def mechanism(self) -> str:
        """Raises: UnsupportedAlgorithm, HsmError."""
        if self._mechanism is None:
            self._mechanism = choose_wrap_mechanism(self._session.capabilities())
        return self._mechanism

    def make(self, algorithm: KeyAlgorithm, master_label: str) -> WrappedKey:
        """Generate a holder key pair in the token and hand it out wrapped; nothing stays behind.

        Raises: UnsupportedAlgorithm (the token cannot make or wrap such a key), KeyNotFound (the
            master key is not on the token), HsmError.
        """
        name = self.mechanism()

        def make(session: pkcs11.Session) -> WrappedKey:
            master = self._masters.handle(session, master_label)
            public, private = _generate_session_pair(session, algorithm)
            package_key = None
            try:
                package_key = session.generate_key(KeyType.AES, 256, store=False, template=dict(_PACKAGE_KEY_TEMPLATE))
                try:
                    wrapped_private = wrap(package_key, private, name)
                except p11.KeyNotWrappable:
                    raise UnsupportedAlgorithm(f"the token cannot wrap {algorithm.value} keys: choose another "
                                               "key algorithm for holders") from None
                wrapped_package_key = wrap(master, package_key, name)
                public_der = _spki(public_key_of(public, algorithm))
            finally:
                for key in (private, public, package_key):
                    if key is not None:
                        key.destroy()
            return WrappedKey(algorithm, public_der, wrapped_private, wrapped_package_key, master_label, name)

        return self._session.run(make, f"make a {algorithm.value} holder key")

    def rewrap(self, wrapped_package_key: bytes, mechanism: str, from_label: str, to_label: str) -> bytes:
        """The package key wrapped by ``to_label`` instead of ``from_label`` (master rotation),
        with the package's own ``mechanism``: the private key stays wrapped with it, and the
        package records one mechanism for both.

        Raises: KeyNotFound (a master key is not on the token), DataCorrupted (the wrapped key does
            not open under ``from_label``), HsmError.
        """
        def rewrap(session: pkcs11.Session) -> bytes:
            old, new = self._masters.handle(session, from_label), self._masters.handle(session, to_label)
            package_key = _unwrap_package_key(old, wrapped_package_key, mechanism, _REWRAPPED_PACKAGE_KEY,
                                              MechanismFlag.WRAP, extractable=True)
            try:
                return wrap(new, package_key, mechanism)
            finally:
                package_key.destroy()

        return self._session.run(rewrap, f"re-wrap a package key under {to_label!r}")

    def expect(self, handle_id: str, signatures: int, until: datetime.datetime) -> None:
        """Keep the key of ``handle_id`` open in this process for ``signatures`` more signatures,
        made by :meth:`sign` or given up by :meth:`cancel`. Called before the spending that allows
        them commits: a key found open when a call spends its token must still be open when the
        call signs, whatever other calls of the token (the one that spends its last digest among
        them) do in between. ``until``: the token's expiry or later; kept SIGNING_GRACE beyond."""
        until += SIGNING_GRACE
        with self._expected_lock:
            expected = self._expected.get(handle_id)
            if expected is None:
                self._expected[handle_id] = _Expected(signatures, until)
            else:
                expected.signatures += signatures
                expected.until = max(expected.until, until)

    def cancel(self, handle_id: str, signatures: int, last: bool = False) -> None:
        """Those of :meth:`expect` that will not be made (the spending was refused, or the signing
        failed; ``last``: a spending that took the token's last digest). A key nothing needs any
        more closes at the next :meth:`sign` of this process."""
        with self._expected_lock:
            expected = self._expected.get(handle_id)
            if expected is not None and last:
                expected.exhausted = True
            if self._settle(handle_id, signatures):
                self._finished.add(handle_id)

    def sign(self, handle_id: str, digests: list[bytes], algorithm: SignatureAlgorithm, now: datetime.datetime,
             to_open: KeyToOpen | None = None, last: bool = False) -> list[bytes]:
        """Sign each digest with the holder key open for ``handle_id``, opening it from ``to_open``
        when it is not open here. ``last``: the spending of these digests took the token's last
        one; the key is destroyed once the signatures this process expects with it are made.

        Raises:
            KeyNotOpen: not open here and ``to_open`` is None (load it and call again).
            UnsupportedAlgorithm: ``algorithm`` does not fit the key. InvalidArgument: a digest's length.
            DataCorrupted: the wrapped key does not open. KeyNotFound (master key), HsmError.
        """
        inputs = [algorithm.token_input(d) for d in digests]
        mechanism, parameter = algorithm.mechanism()

        def sign(session: pkcs11.Session) -> list[bytes]:
            self._close_finished(now)
            entry = self._session.cache.get(("open", handle_id))
            if entry is None:
                if to_open is None:
                    raise KeyNotOpen(handle_id)
                entry = self._open(session, to_open)
            algorithm.check_key(entry.algorithm)
            raw = [entry.key.sign(data, mechanism=mechanism, mechanism_param=parameter) for data in inputs]
            with self._expected_lock:
                expected = self._expected.get(handle_id)
                if expected is not None and last:
                    expected.exhausted = True
                finished = self._settle(handle_id, len(raw)) if expected is not None else last
            if finished:
                self._close(handle_id)
            return raw

        return [algorithm.encode_token_output(r) for r in self._session.run(sign, "sign with a holder key")]

    def _settle(self, handle_id: str, signatures: int) -> bool:
        """``signatures`` of those expected for ``handle_id`` are made or given up (the caller holds
        the lock); returns whether nothing needs the key any more."""
        expected = self._expected.get(handle_id)
        if expected is None:
            return False
        expected.signatures -= signatures
        if expected.signatures > 0:
            return False
        del self._expected[handle_id]  # not exhausted: the token may sign again, and the key stays open
        return expected.exhausted

    def is_open(self, handle_id: str, now: datetime.datetime) -> bool:
        """Whether a key is open here for ``handle_id`` and not expired (no PKCS#11 call)."""
        entry = self._session.cache.get(("open", handle_id))
        return entry is not None and entry.expires_at > now

    def close(self, handle_id: str) -> None:
        """Destroy the key open for ``handle_id`` here, if any. Raises: HsmError."""
        self._session.run(lambda _s: self._close(handle_id), "close a holder key")

    def open_count(self) -> int:
        """How many holder keys are open in this process (session objects, never token objects)."""
        return sum(1 for k in list(self._session.cache) if isinstance(k, tuple) and k[0] == "open")

    def _open(self, session: pkcs11.Session, to_open: KeyToOpen) -> _OpenKey:
        open_keys = [k for k in self._session.cache if isinstance(k, tuple) and k[0] == "open"]
        if len(open_keys) >= MAX_OPEN:
            # The one that expires first, among those no call of this process still expects.
            unclaimed = [k for k in open_keys if k[1] not in self._expected] or open_keys
            oldest = min(unclaimed, key=lambda k: self._session.cache[k].expires_at)
            self._close(oldest[1])
        wrapping, parameter, wrapped_private = unwrap_parameters(to_open.mechanism, to_open.wrapped_private)
        master = self._masters.handle(session, to_open.master_label)
        package_key = _unwrap_package_key(master, to_open.wrapped_package_key, to_open.mechanism,
                                          _UNWRAPPED_PACKAGE_KEY, MechanismFlag.UNWRAP, extractable=False)
        def unwrap(template: dict) -> pkcs11.PrivateKey:
            return package_key.unwrap_key(ObjectClass.PRIVATE_KEY, to_open.algorithm.key_type, wrapped_private,
                                          mechanism=wrapping, mechanism_param=parameter, store=False,
                                          capabilities=MechanismFlag.SIGN, template=dict(template))
        try:
            try:
                private = unwrap(_UNWRAPPED_PRIVATE)
            except p11.AttributeReadOnly:  # see _unwrap_package_key
                private = unwrap({a: v for a, v in _UNWRAPPED_PRIVATE.items() if a not in _SET_AFTER_UNWRAP})
        except _UNWRAP_REFUSALS:
            raise DataCorrupted("a signing data package does not open: it was altered or belongs elsewhere") from None
        finally:
            package_key.destroy()
        protect_unwrapped(private, extractable=False)
        entry = _OpenKey(private, to_open.algorithm, to_open.expires_at)
        self._session.cache[("open", to_open.handle_id)] = entry
        return entry

    def _close(self, handle_id: str) -> None:
        entry = self._session.cache.pop(("open", handle_id), None)
        if entry is not None:
            try:
                entry.key.destroy()
            except p11.PKCS11Error:
                pass  # the session went away, and its session objects with it

    def _close_finished(self, now: datetime.datetime) -> None:
        """Close the keys nothing needs any more (see :meth:`cancel`) and, at most once per
        SWEEP_INTERVAL, those of expired tokens, unless a call of this process that spent one
        before it expired has yet to sign; forget expectations past their time."""
        if self._finished:
            with self._expected_lock:
                finished, self._finished = self._finished, set()
            for handle_id in finished:
                self._close(handle_id)
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        with self._expected_lock:
            for handle_id in [h for h, e in self._expected.items() if e.until <= now]:
                del self._expected[handle_id]
            expected = set(self._expected)
        for key, entry in list(self._session.cache.items()):
            if isinstance(key, tuple) and key[0] == "open" and entry.expires_at <= now and key[1] not in expected:
                self._close(key[1])


_SET_AFTER_UNWRAP = (Attribute.SENSITIVE, Attribute.EXTRACTABLE)
# What a token answers to bytes that do not unwrap (altered, or for another key); a bad CBC padding
# among them (openCryptoki says FunctionFailed), told apart from nothing else.
_UNWRAP_REFUSALS = (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.EncryptedDataInvalid,
                    p11.EncryptedDataLenRange, p11.GeneralError, p11.FunctionFailed, p11.TemplateInconsistent,
                    p11.KeyTypeInconsistent, p11.AttributeValueInvalid)


def _unwrap_package_key(master: pkcs11.SecretKey, wrapped: bytes, name: str, template: dict,
                        capability: MechanismFlag, extractable: bool) -> pkcs11.SecretKey:
    """Raises: DataCorrupted: the wrapped key does not open under this master key."""
    mechanism, parameter, body = unwrap_parameters(name, wrapped)

    def unwrap(template: dict) -> pkcs11.SecretKey:
        return master.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, body, mechanism=mechanism,
                                 mechanism_param=parameter, store=False, capabilities=capability,
                                 template=dict(template))
    try:
        try:
            key = unwrap(template)
        except p11.AttributeReadOnly:
            # openCryptoki 3.8 refuses CKA_EXTRACTABLE in an unwrap template: both protections are
            # then set afterwards (protect_unwrapped), as on tokens that ignore them.
            key = unwrap({a: v for a, v in template.items() if a not in _SET_AFTER_UNWRAP})
    except _UNWRAP_REFUSALS:
        raise DataCorrupted("a package key does not open under its master key: it was altered, or the "
                            "master key on this token is another key of the same label") from None
    protect_unwrapped(key, extractable)
    return key


def _generate_session_pair(session: pkcs11.Session, algorithm: KeyAlgorithm):
    if algorithm.family == "rsa":
        return session.generate_keypair(KeyType.RSA, algorithm.size, store=False,
                                        public_template={**_NEW_PUBLIC, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                                        private_template=dict(_NEW_PRIVATE))
    parameters = session.create_domain_parameters(
        algorithm.key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(algorithm.curve_oid)}, local=True)
    return parameters.generate_keypair(store=False, mechanism=algorithm.generation_mechanism,
                                       public_template=dict(_NEW_PUBLIC), private_template=dict(_NEW_PRIVATE))


def _spki(public) -> bytes:
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
