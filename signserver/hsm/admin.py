"""Token administration on any PKCS#11 module: slots, token initialisation, SO and user PIN
changes, unblocking; and the health probes that run in the logged-in session.

The administration operations each open their own short-lived session under the process-wide
PKCS#11 lock; none of them needs the server to be running.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pkcs11
import pkcs11.exceptions as p11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pkcs11 import TokenFlag

from signserver.errors import (
    AlreadyExists,
    HsmError,
    HsmLoginFailed,
    HsmOperationFailed,
    InvalidArgument,
    SignServerError,
    TokenNotFound,
)
from signserver.hsm.algorithms import SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.label_text import LabelTextMapper
from signserver.hsm.module import load_module, pkcs11_calls, raw_module
from signserver.hsm.pin_guard import SO, PinGuard
from signserver.hsm.session import TokenSession, find_token
from signserver.hsm.pin_rules import PinLengths, read_pin_lengths
from signserver.hsm.translate import error_for_return_value, translate, translate_return_value
from signserver.secret import Secret

log = logging.getLogger(__name__)

# Flags shown to administrators, in the order they are listed.
_SHOWN_FLAGS = (
    ("TOKEN_INITIALIZED", "initialised"),
    ("USER_PIN_INITIALIZED", "user PIN set"),
    ("LOGIN_REQUIRED", "login required"),
    ("WRITE_PROTECTED", "write-protected"),
    ("USER_PIN_COUNT_LOW", "user PIN count low"),
    ("USER_PIN_FINAL_TRY", "user PIN final try"),
    ("USER_PIN_LOCKED", "user PIN locked"),
    ("USER_PIN_TO_BE_CHANGED", "user PIN to be changed"),
    ("SO_PIN_COUNT_LOW", "SO PIN count low"),
    ("SO_PIN_FINAL_TRY", "SO PIN final try"),
    ("SO_PIN_LOCKED", "SO PIN locked"),
    ("SO_PIN_TO_BE_CHANGED", "SO PIN to be changed"),
)


@dataclass(frozen=True)
class SlotStatus:
    """A slot and the token in it, with the token's flags in words and its PIN lengths."""

    slot_id: int
    slot_description: str
    token_present: bool
    token_label: str
    token_model: str
    token_manufacturer: str
    token_serial: str
    flags: tuple[str, ...]
    min_pin_length: int | None = None
    max_pin_length: int | None = None

    @property
    def initialised(self) -> bool:
        return "initialised" in self.flags

    @property
    def verifies_so_pin_at_init(self) -> bool:
        """Whether C_InitToken surely checks an SO PIN the token already has: every initialised
        token does. Some uninitialised ones do too (openCryptoki's factory SO PIN) and their
        flags do not tell: SoftHSM's free slot, which takes any SO PIN, flags "SO PIN to be
        changed" as well."""
        return self.initialised

    @property
    def pin_lengths(self) -> PinLengths:
        return PinLengths(self.min_pin_length or 1, self.max_pin_length)


def _flag_words(flags: TokenFlag) -> tuple[str, ...]:
    return tuple(word for name, word in _SHOWN_FLAGS if flags & TokenFlag[name])


class TokenAdministrator:
    """Administers the tokens of one PKCS#11 module (SoftHSM, openCryptoki, OpenSC for smart
    cards, a network HSM's client library, ...)."""

    def __init__(self, module: Path | None):
        self.module = module

    def slots(self) -> list[SlotStatus]:
        """Every slot of the module, with its token if one is present.

        Raises: ConfigurationError, HsmUnavailable, HsmError.
        """
        with pkcs11_calls():
            lib = load_module(self.module)
            try:
                return [self._status(slot) for slot in lib.get_slots()]
            except p11.PKCS11Error as exc:
                raise translate(exc, "list the slots") from exc

    def init_target(self, label: str, slot_id: int | None = None) -> SlotStatus:
        """The slot :meth:`init_token` would initialise for ``label`` and ``slot_id``, so that an
        administrator can be asked before anything changes.

        Raises: AlreadyExists (another slot's token has the label), TokenNotFound, HsmError.
        """
        with pkcs11_calls():
            lib = load_module(self.module)
            try:
                return self._status(self._target_slot(lib, label, slot_id))
            except p11.PKCS11Error as exc:
                raise translate(exc, "list the slots") from exc

    def init_token(self, label: str, so_pin: Secret, user_pin: Secret, slot_id: int | None = None, *,
                   current_so_pin: Secret | None = None, reinitialise: bool = False,
                   before_init: Callable[[], Callable[[], None]] | None = None,
                   guard: PinGuard | None = None) -> SlotStatus:
        """Initialise a token in ``slot_id`` (default: the first slot whose token is not
        initialised) with ``label``, leave it with the SO PIN ``so_pin``, then set the user PIN.

        ``before_init`` is called once every check passed, right before the token is changed
        (to keep generated PINs where they will be needed: a token whose PINs nobody has is
        lost); the function it returns is called when C_InitToken refuses, the token unchanged.
        What it raises stops the initialisation.

        C_InitToken is given ``current_so_pin`` when there is one: every initialised token, and
        tokens that come with a factory SO PIN (openCryptoki: 87654321), verify it there. When it
        differs from ``so_pin``, the SO PIN is changed right after (C_SetPIN as the SO). A token
        that takes the new SO PIN directly (SoftHSM's free slot) needs no current one. The PIN
        C_InitToken verifies is presented through ``guard`` where there is one, as an SO login
        would be (see :meth:`PinGuard.login_so`): a token that verifies it counts a wrong one.

        Raises:
            InvalidArgument: empty PIN, label too long or not text, a PIN outside the token's lengths,
                an initialised token without ``reinitialise`` or without its current SO PIN.
            AlreadyExists: another token already has that label.
            TokenNotFound: no uninitialised token (or no such slot).
            HsmLoginFailed, HsmPinLocked: the token refused the current SO PIN.
            HsmLoginWithheld: the guard did not try it (refused before, or wrong SO tries reported).
            ConfigurationError: the guard's refusals file.
            HsmError: the token refused otherwise.
        """
        if not so_pin or not user_pin or (current_so_pin is not None and not current_so_pin):
            raise InvalidArgument("the SO PIN and the user PIN must not be empty")
        try:
            encoded = label.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: a byte of another encoding
            raise InvalidArgument("a token label must be valid UTF-8 text") from None
        if not encoded or len(encoded) > 32:
            raise InvalidArgument("a token label has 1 to 32 bytes")
        with pkcs11_calls():
            lib = load_module(self.module)
            try:
                slot = self._target_slot(lib, label, slot_id)
                target = self._status(slot)
                if target.initialised and not reinitialise:
                    raise InvalidArgument(
                        f"slot {slot.slot_id} holds the initialised token {target.token_label!r}; "
                        "initialising it again destroys every key on it, and must be confirmed")
                if target.initialised and current_so_pin is None:
                    raise InvalidArgument(
                        f"the token {target.token_label!r} is initialised: initialising it again "
                        "takes its current SO PIN")
                lengths = target.pin_lengths
                lengths.check(so_pin, "SO PIN")
                lengths.check(user_pin, "user PIN")
                verified = current_so_pin or so_pin
                doing = f"initialise the token in slot {slot.slot_id}"
                refused: list[int] = []  # C_InitToken's return value when it refused

                def initialise(_token: pkcs11.Token) -> None:
                    # The guard's checks passed: only now may generated PINs be written.
                    undo = before_init() if before_init is not None else None
                    rv = raw_module(self.module).init_token(slot.slot_id, verified.reveal(), label)
                    if rv != 0:
                        if undo is not None:
                            undo()
                        refused.append(rv)
                        raise error_for_return_value(rv)  # PinIncorrect is what the guard remembers

                try:
                    if guard is not None:
                        guard.present(slot.get_token(), verified, SO, initialise)
                    else:
                        initialise(slot.get_token())
                except p11.PKCS11Error:
                    if not refused:
                        raise
                    raise _init_refused(translate_return_value(refused[0], doing), current_so_pin is None) from None
                token = find_token(lib, label, self.module)
                with token.open(rw=True, so_pin=verified.reveal(), attribute_mapper=LabelTextMapper()) as session:
                    if verified.reveal() != so_pin.reveal():
                        session.set_pin(verified.reveal(), so_pin.reveal())
                    session.init_pin(user_pin.reveal())
                log.info("initialised token %r in slot %s", label, slot.slot_id)
                return self._status(token.slot)
            except p11.PKCS11Error as exc:
                raise translate(exc, f"initialise token {label!r}") from exc

    def change_user_pin(self, token_label: str, old_pin: Secret, new_pin: Secret, guard: PinGuard | None = None) -> None:
        """Change the user PIN with the current one (C_SetPIN as the user). The user logs in
        through ``guard`` where there is one (see :meth:`PinGuard.login`).

        Raises: TokenNotFound, HsmLoginFailed (wrong old PIN), HsmLoginWithheld (the guard did not
        try it), HsmPinLocked, InvalidArgument (empty, or outside the token's PIN lengths),
        ConfigurationError (the guard's refusals file), HsmError.
        """
        if not new_pin or not old_pin:
            raise InvalidArgument("the PINs must not be empty")
        self._with_session(token_label, old_pin, None, ("new user PIN", new_pin),
                           lambda s: s.set_pin(old_pin.reveal(), new_pin.reveal()), "change the user PIN", guard)
        log.info("changed the user PIN of token %r", token_label)

    def change_so_pin(self, token_label: str, old_pin: Secret, new_pin: Secret, guard: PinGuard | None = None) -> None:
        """Change the security officer's PIN with the current one (C_SetPIN as the SO), e.g.
        the factory SO PIN a token came with. The SO logs in through ``guard`` where there is one
        (see :meth:`PinGuard.login_so`).

        Raises: TokenNotFound, HsmLoginFailed (wrong old SO PIN), HsmLoginWithheld (the guard did
        not try it), HsmPinLocked (SO PIN locked), InvalidArgument (empty, or outside the token's
        PIN lengths), ConfigurationError (the guard's refusals file), HsmError.
        """
        if not new_pin or not old_pin:
            raise InvalidArgument("the SO PINs must not be empty")
        self._with_session(token_label, None, old_pin, ("new SO PIN", new_pin),
                           lambda s: s.set_pin(old_pin.reveal(), new_pin.reveal()), "change the SO PIN", guard)
        log.info("changed the SO PIN of token %r", token_label)

    def unblock_user_pin(self, token_label: str, so_pin: Secret, new_user_pin: Secret,
                         guard: PinGuard | None = None) -> None:
        """The security officer sets a new user PIN, which also unblocks a locked one (C_InitPIN).
        The SO logs in through ``guard`` where there is one (see :meth:`PinGuard.login_so`).

        Raises: TokenNotFound, HsmLoginFailed (wrong SO PIN), HsmLoginWithheld (the guard did not
        try it), HsmPinLocked (SO PIN locked), InvalidArgument (empty, or outside the token's PIN
        lengths), ConfigurationError (the guard's refusals file), HsmError.
        """
        if not new_user_pin:
            raise InvalidArgument("the new PIN must not be empty")
        self._with_session(token_label, None, so_pin, ("new user PIN", new_user_pin),
                           lambda s: s.init_pin(new_user_pin.reveal()), "unblock the user PIN", guard)
        log.info("security officer set a new user PIN on token %r", token_label)

    def _with_session(self, token_label, user_pin: Secret | None, so_pin: Secret | None,
                      new_pin: tuple[str, Secret], operation, doing, guard: PinGuard | None = None):
        with pkcs11_calls():
            lib = load_module(self.module)
            token = find_token(lib, token_label, self.module)
            what, pin = new_pin
            # Checked before the login, so that a PIN the token would refuse costs no try.
            read_pin_lengths(self.module, token.slot.slot_id).check(pin, what)
            try:
                if guard is not None and so_pin:
                    opened = guard.login_so(token, so_pin)
                elif guard is not None:
                    opened = guard.login(token, user_pin)
                else:
                    opened = token.open(rw=True, user_pin=user_pin.reveal() if user_pin else None,
                                        so_pin=so_pin.reveal() if so_pin else None,
                                        attribute_mapper=LabelTextMapper())
                with opened as session:
                    operation(session)
            except p11.PKCS11Error as exc:
                raise translate(exc, doing) from exc

    def _target_slot(self, lib: pkcs11.lib, label: str, slot_id: int | None) -> pkcs11.Slot:
        target = None
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            initialised = bool(token.flags & TokenFlag.TOKEN_INITIALIZED)
            chosen = slot.slot_id == slot_id if slot_id is not None else not initialised and target is None
            if chosen:
                target = slot
            elif initialised and token.label == label:
                raise AlreadyExists(f"a token labelled {label!r} already exists in slot {slot.slot_id}")
        if target is None:
            raise TokenNotFound(
                f"no slot {slot_id} with a token" if slot_id is not None
                else f"no uninitialised token in {self.module}"
            )
        return target

    def _status(self, slot: pkcs11.Slot) -> SlotStatus:
        present = bool(slot.flags & pkcs11.SlotFlag.TOKEN_PRESENT)
        token = slot.get_token() if present else None
        lengths = read_pin_lengths(self.module, slot.slot_id) if token else None
        return SlotStatus(
            slot_id=slot.slot_id,
            slot_description=slot.slot_description,
            token_present=present,
            token_label=token.label if token else "",
            token_model=token.model if token else "",
            token_manufacturer=token.manufacturer_id if token else "",
            token_serial=token.serial.decode("ascii", "replace").strip() if token else "",
            flags=_flag_words(token.flags) if token else (),
            min_pin_length=lengths.minimum if lengths else None,
            max_pin_length=lengths.maximum if lengths else None,
        )


def _init_refused(error: SignServerError, without_current_so_pin: bool) -> SignServerError:
    """C_InitToken's refusal, with the likely cause when a token checked an SO PIN nobody gave."""
    if without_current_so_pin and isinstance(error, HsmLoginFailed):
        return HsmLoginFailed(
            f"{error}. This token verifies its current SO PIN when it is initialised: give that PIN "
            "as the current SO PIN (openCryptoki's is 87654321 until it is changed)")
    return error


# --- health probes (in the logged-in session) ------------------------------------------------

def check_signature(keys: HsmKeyStore, key_id: str) -> SignatureAlgorithm:
    """Sign a random challenge with the key inside the HSM and verify the signature with the key's
    public half; returns the scheme used. With the key's handle cached (a server key in use), this
    makes no object search, whatever the number of objects on the token.

    Raises:
        HsmOperationFailed: the signature does not verify.
        KeyNotFound, UnsupportedAlgorithm, HsmError: the key is missing or unusable.
    """
    challenge = os.urandom(32)
    public = keys.public_key(key_id)
    algorithm = _probe_algorithm(public)
    signature = keys.sign_data(key_id, challenge, algorithm)
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, challenge)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, challenge, ec.ECDSA(algorithm.hash.cryptography_hash))
        else:
            public.verify(signature, challenge, padding.PKCS1v15(), algorithm.hash.cryptography_hash)
    except InvalidSignature:
        raise HsmOperationFailed(f"the token's signature with key {key_id} does not verify") from None
    return algorithm


def count_objects(session: TokenSession) -> int:
    """How many objects the logged-in user sees on the token. One search that walks every object,
    holding the PKCS#11 lock meanwhile: for administrators who ask, never for a request path.

    Raises: HsmError, TokenNotFound.
    """
    return session.run(lambda s: len(session.find(s, {})), "count the objects on the token")


def _probe_algorithm(public) -> SignatureAlgorithm:
    if isinstance(public, ed25519.Ed25519PublicKey):
        return SignatureAlgorithm.ED25519
    if isinstance(public, ec.EllipticCurvePublicKey):
        return SignatureAlgorithm.ECDSA_SHA384 if public.curve.key_size >= 384 else SignatureAlgorithm.ECDSA_SHA256
    if isinstance(public, rsa.RSAPublicKey):
        return SignatureAlgorithm.RSA_PKCS1V15_SHA256
    raise HsmError(f"a {type(public).__name__} is not a key signserver signs with")  # keystore admits no other
