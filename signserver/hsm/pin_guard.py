"""Logging in to a token without bringing it nearer its PIN lockout.

Tokens count wrong user PINs and lock the PIN after a few (openCryptoki's soft token after 3);
then only the security officer can unblock it. Every process of the server logs in on its own
(each worker, each CLI command), so a wrong configured PIN tried once per process locks a token
within a second. Before each login a :class:`PinGuard`

- refuses when the token reports its user PIN locked, naming the command that unblocks it;
- does not try a PIN that the token refused before, in any process: refusals are remembered in a
  file (:class:`RefusedPins`) until the configured PIN changes, the file is removed, or a login
  with another PIN succeeds;
- does not log in while the token reports a wrong try since its last successful login
  (USER_PIN_COUNT_LOW, USER_PIN_FINAL_TRY) unless an administrator allows it
  (``hsm.login_when_pin_count_low``), or this process already logged in to that token with that
  PIN (a PIN the token accepted is not a guess: a running worker reopening its session goes on).

Logins through guards that share a file are serialised across processes by a lock file beside
it, so that processes started together with a wrong PIN reach the token once.

The security officer's logins (the key ceremony's export, `hsm unblock-pin`, `hsm change-so-pin`)
go through the same guard (:meth:`PinGuard.login_so`), by the same rules on the token's SO flags
(SO_PIN_LOCKED, SO_PIN_COUNT_LOW, SO_PIN_FINAL_TRY), with SO PINs remembered apart from user PINs:
a locked SO PIN cannot be unblocked at all, only the token re-initialised, which erases its keys.
A PIN the token verifies otherwise than at a login (the current SO PIN C_InitToken checks before
it initialises a token again) goes through :meth:`PinGuard.present`, by the same rules.

An argon2id evaluation of the refusals that finds no memory (a worker near its RLIMIT_DATA bound)
or cannot start its threads says nothing of the PIN: the login is refused with MemoryExhausted
(ServerBusy), the PIN not tried, rather than taken for a PIN the token never refused and tried
(a wrong try the token counts toward its lock).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pkcs11
import pkcs11.exceptions as p11
from argon2 import PasswordHasher
from argon2.exceptions import HashingError, InvalidHashError, VerificationError
from pkcs11 import TokenFlag

from signserver.argon2_faults import MEMORY, THREADS, fault_of
from signserver.config import HsmConfig, env_name
from signserver.errors import (ConfigurationError, HsmLoginWithheld, HsmPinLocked, MemoryExhausted, ServerBusy,
                               SignServerError)
from signserver.files import write_private
from signserver.secret import Secret
from signserver.hsm.label_text import LabelTextMapper

log = logging.getLogger(__name__)
T = TypeVar("T")

COUNT_LOW_SETTING = "hsm.login_when_pin_count_low"
USER, SO = "user", "so"  # whose PIN: the token's user's, or its security officer's
UNBLOCK_COMMAND = "signserver hsm unblock-pin"
# As costly as a password hash: a refused PIN is often a near miss of the right one, and PINs are
# short (openCryptoki: 4 to 8 characters). The cost is paid once per login, not per request. (On the
# default layout the right PIN sits in the same directory, hsm/user-pin, under the same mode.)
_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)


def refused_pins_file(state_dir: Path) -> Path:
    """Where the PINs the server's tokens refused are remembered."""
    return state_dir / "hsm" / "refused-pins.json"


def login_refusal(flags: TokenFlag, token_label: str, allow_count_low: bool,
                  role: str = USER) -> SignServerError | None:
    """Why not to log in as ``role`` (USER or SO) to a token reporting ``flags`` (read just
    before C_Login), or None.

    ``allow_count_low``: an administrator allowed logging in after wrong tries, or the PIN was
    already accepted by this token in this process.
    """
    if role == SO:
        return _so_login_refusal(flags, token_label, allow_count_low)
    if flags & TokenFlag.USER_PIN_LOCKED:
        return HsmPinLocked(
            f"the user PIN of token {token_label!r} is locked after too many wrong tries; the security "
            f"officer sets a new one with `{UNBLOCK_COMMAND}`, then configure that PIN"
        )
    if allow_count_low:
        return None
    if flags & TokenFlag.USER_PIN_FINAL_TRY:
        state = "that one more wrong user PIN locks it (USER_PIN_FINAL_TRY)"
    elif flags & TokenFlag.USER_PIN_COUNT_LOW:
        state = "wrong user PINs since its last successful login (USER_PIN_COUNT_LOW)"
    else:
        return None
    return HsmLoginWithheld(
        f"the token {token_label!r} reports {state}; signserver does not log in, since a wrong PIN "
        "could lock the token. Check the configured PIN (hsm.user_pin_file or "
        f"SIGNSERVER_HSM_USER_PIN), then allow a login with {COUNT_LOW_SETTING} = true (or "
        f"{env_name(COUNT_LOW_SETTING)}=true) for one start: if the PIN is wrong after all, that try "
        "may lock the token; a successful login clears the report, so remove the setting afterwards"
    )


def _so_login_refusal(flags: TokenFlag, token_label: str, allow_count_low: bool) -> SignServerError | None:
    """:func:`login_refusal` for the security officer."""
    # An uninitialised token has no SO PIN of its own to lock: SoftHSM's free slot reports
    # SO_PIN_LOCKED all the same, and takes any SO PIN at C_InitToken.
    if flags & TokenFlag.SO_PIN_LOCKED and flags & TokenFlag.TOKEN_INITIALIZED:
        return HsmPinLocked(
            f"the SO PIN of token {token_label!r} is locked after too many wrong tries: nobody can act as its "
            "security officer (the key ceremony's export, unblocking the user PIN) until the token is "
            "initialised again, which erases its keys"
        )
    if allow_count_low:
        return None
    if flags & TokenFlag.SO_PIN_FINAL_TRY:
        state = "that one more wrong SO PIN locks it (SO_PIN_FINAL_TRY)"
    elif flags & TokenFlag.SO_PIN_COUNT_LOW:
        state = "wrong SO PINs since its last successful SO login (SO_PIN_COUNT_LOW)"
    else:
        return None
    return HsmLoginWithheld(
        f"the token {token_label!r} reports {state}; signserver does not log in as its security officer, "
        "since a wrong SO PIN could lock it, and a locked SO PIN is never unblocked. Check the SO PIN, then "
        f"allow a login with {COUNT_LOW_SETTING} = true (or {env_name(COUNT_LOW_SETTING)}=true) for this one "
        "command: a successful login clears the report"
    )


class RefusedPins:
    """PINs a token refused, remembered across processes in one JSON file (mode 0600): for each,
    the token's serial and label, whose PIN it was (``role``: USER or SO; entries without one are
    user PINs) and a salted argon2id hash of the PIN, never the PIN."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock that serialises logins through this file across processes.

        Raises: ConfigurationError: the lock file cannot be made.
        """
        lock_path = self.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError("state_dir", f"cannot open {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def refused(self, serial: str, label: str, pin: Secret, role: str = USER) -> bool:
        """Whether the token ``serial``/``label`` refused ``pin`` as ``role``'s PIN before.

        Raises:
            ConfigurationError: the file cannot be read.
            MemoryExhausted, ServerBusy: no memory or threads to check the PIN against a refusal
                (neither refused nor not: the PIN must not be tried).
        """
        for entry in self._entries():
            if (entry.get("token_serial") == serial and entry.get("token_label") == label
                    and entry.get("role", USER) == role):
                if _matches(entry.get("pin_hash", ""), pin):
                    return True
        return False

    def remember(self, serial: str, label: str, pin: Secret, role: str = USER) -> None:
        """Record that the token refused ``pin`` as ``role``'s PIN.

        Raises: ConfigurationError. MemoryExhausted, ServerBusy: no memory or threads to hash the PIN.
        """
        try:
            pin_hash = _HASHER.hash(pin.reveal())
        except HashingError as error:
            raise _argon2_fault(error, "hash the PIN the token refused, to remember it") or error from None
        entry = {"token_serial": serial, "token_label": label, "pin_hash": pin_hash}
        if role != USER:
            entry["role"] = role
        self._write([*self._entries(), entry])

    def forget(self, serial: str, label: str, role: str = USER) -> bool:
        """Drop the refusals of ``role``'s PINs recorded for a token; whether there were any.

        Raises: ConfigurationError.
        """
        entries = self._entries()
        kept = [e for e in entries
                if (e.get("token_serial"), e.get("token_label"), e.get("role", USER)) != (serial, label, role)]
        if len(kept) == len(entries):
            return False
        self._write(kept)
        return True

    def count(self, label: str, role: str | None = None) -> int:
        """How many refusals (of ``role``'s PINs, or anyone's) are recorded for tokens labelled
        ``label``. Raises: ConfigurationError."""
        return sum(1 for e in self._entries()
                   if e.get("token_label") == label and role in (None, e.get("role", USER)))

    def _entries(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                "state_dir", f"cannot read the refused PINs in {self.path} ({exc}); remove the file"
            ) from None
        entries = data.get("refused", []) if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ConfigurationError(
                "state_dir", f"cannot read the refused PINs in {self.path} (not a list of refusals); remove the file")
        # An entry edited by hand into another shape is left out rather than failing every login.
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("pin_hash", ""), str)]

    def _write(self, entries: list[dict]) -> None:
        temporary = self.path.with_suffix(".tmp")
        try:
            write_private(temporary, json.dumps({"refused": entries}, indent=1).encode("utf-8"))
            os.replace(temporary, self.path)
        except OSError as exc:
            raise ConfigurationError("state_dir", f"cannot write {self.path}: {exc.strerror}") from None


def _matches(pin_hash: str, pin: Secret) -> bool:
    """Whether ``pin`` is the one ``pin_hash`` was made of; a hash that is not one does not match.

    Raises: MemoryExhausted, ServerBusy: no memory or threads for the evaluation.
    """
    try:
        return _HASHER.verify(pin_hash, pin.reveal())
    except InvalidHashError:
        return False
    except VerificationError as error:  # a mismatch or a malformed hash, unless libargon2 lacked a resource
        fault = _argon2_fault(error, "check the PIN against those the token refused before; it is not tried")
        if fault is not None:
            raise fault from None
        return False


def _argon2_fault(error: Exception, doing: str) -> ServerBusy | None:
    """The refusal for an argon2-cffi error that says this process lacked memory or a thread to
    ``doing`` (completes "to ..."; signserver.argon2_faults), logged at WARNING; None for any other
    (a mismatch, a malformed hash)."""
    fault = fault_of(error)
    if fault == MEMORY:
        log.warning("an argon2id evaluation of the PIN guard found no memory (the worker near its memory bound?) "
                    "to %s: refused with MemoryExhausted", doing)
        return MemoryExhausted(f"the server has no memory left to {doing}: try again shortly")
    if fault == THREADS:
        log.warning("an argon2id evaluation of the PIN guard could not start its threads to %s: refused with "
                    "ServerBusy", doing)
        return ServerBusy(f"the server cannot start the threads to {doing}: try again shortly")
    return None


class PinGuard:
    """Decides, just before each C_Login of one PIN, whether to try it, and records the outcome.

    ``refusals`` None: refusals are remembered only by the calling :class:`TokenSession`.
    """

    def __init__(self, refusals: RefusedPins | None = None, login_when_pin_count_low: bool = False):
        self.refusals = refusals
        self.login_when_pin_count_low = login_when_pin_count_low
        self._accepted: set[tuple[str, str, str]] = set()  # tokens that accepted the PIN in this process, per role

    @classmethod
    def for_config(cls, hsm: HsmConfig, state_dir: Path) -> "PinGuard":
        """The guard every process of one configuration uses."""
        return cls(RefusedPins(refused_pins_file(state_dir)), hsm.login_when_pin_count_low)

    def login(self, token: pkcs11.Token, pin: Secret) -> pkcs11.Session:
        """Open a read-write session on ``token`` logged in with ``pin``, if that is safe.

        Call with the PKCS#11 lock held.

        Raises:
            HsmPinLocked: the token reports the user PIN locked.
            HsmLoginWithheld: the PIN was refused before, or the token reports wrong tries.
            ConfigurationError: the refusals file cannot be read or written.
            MemoryExhausted, ServerBusy: no memory or threads to check the PIN against the refused
                ones: the PIN is not tried.
            pkcs11.PKCS11Error: from the token (PinIncorrect when it refuses the PIN), untranslated.
        """
        return self._guarded(token, pin, USER)

    def login_so(self, token: pkcs11.Token, so_pin: Secret) -> pkcs11.Session:
        """Open a read-write session on ``token`` logged in as its security officer with
        ``so_pin``, if that is safe: by the rules of :meth:`login`, on the token's SO flags and
        the SO PINs it refused.

        Call with the PKCS#11 lock held and no other session of this process logged in.

        Raises:
            HsmPinLocked: the token reports the SO PIN locked.
            HsmLoginWithheld: the SO PIN was refused before, or the token reports wrong SO tries.
            ConfigurationError: the refusals file cannot be read or written.
            MemoryExhausted, ServerBusy: no memory or threads to check the PIN against the refused
                ones: the PIN is not tried.
            pkcs11.PKCS11Error: from the token (PinIncorrect when it refuses the PIN), untranslated.
        """
        return self._guarded(token, so_pin, SO)

    def present(self, token: pkcs11.Token, pin: Secret, role: str, attempt: Callable[[pkcs11.Token], T]) -> T:
        """Run ``attempt(token)``, which presents ``pin`` to ``token`` as ``role``'s (USER or SO)
        PIN and raises pkcs11's PinIncorrect when the token refuses it, if that is safe: by the
        rules of :meth:`login`. ``attempt`` gets the token with the flags read just before.

        Call with the PKCS#11 lock held.

        Raises:
            HsmPinLocked, HsmLoginWithheld, ConfigurationError, MemoryExhausted, ServerBusy: as
                :meth:`login`.
            pkcs11.PKCS11Error: from ``attempt``, untranslated.
        """
        return self._guarded(token, pin, role, attempt)

    def _guarded(self, token: pkcs11.Token, pin: Secret, role: str,
                 attempt: Callable[[pkcs11.Token], T] | None = None) -> T:
        if attempt is None:
            secret = {"so_pin": pin.reveal()} if role == SO else {"user_pin": pin.reveal()}
            attempt = lambda t: t.open(rw=True, attribute_mapper=LabelTextMapper(), **secret)  # noqa: E731
        if self.refusals is None:
            return self._try(token, pin, role, attempt)
        with self.refusals.exclusive():
            token = token.slot.get_token()  # fresh flags: another process may have logged in meanwhile
            return self._try(token, pin, role, attempt)

    def _try(self, token: pkcs11.Token, pin: Secret, role: str, attempt: Callable[[pkcs11.Token], T]) -> T:
        serial = token.serial.decode("ascii", "replace").strip()
        identity = (serial, token.label, role)
        which = "the configured PIN" if role == USER else "this SO PIN"
        if self.refusals is not None and self.refusals.refused(serial, token.label, pin, role):
            raise HsmLoginWithheld(
                f"the token {token.label!r} refused {which} before (remembered in {self.refusals.path}); "
                "signserver does not try it again, so that the token does not lock it. "
                f"{'Correct the configured PIN' if role == USER else 'Give the right SO PIN'}; if the token's "
                f"{'PIN' if role == USER else 'SO PIN'} has since been set to this value, remove {self.refusals.path}"
            )
        refusal = login_refusal(token.flags, token.label,
                                self.login_when_pin_count_low or identity in self._accepted, role)
        if refusal is not None:
            raise refusal
        try:
            result = attempt(token)
        except p11.PinIncorrect:
            if self.refusals is not None:
                try:
                    self.refusals.remember(serial, token.label, pin, role)
                    log.warning("the token %r refused %s; remembered in %s, not tried again",
                                token.label, which, self.refusals.path)
                except (ConfigurationError, ServerBusy) as exc:
                    # The refusal itself must reach the caller, which then never tries the PIN again
                    # in this process; only other processes lose the memory of it.
                    log.error("the token %r refused %s, which could not be remembered for other processes: %s",
                              token.label, which, exc)
            raise
        self._accepted.add(identity)
        if self.refusals is not None and self.refusals.forget(serial, token.label, role):
            log.info("the token %r accepted %s: its earlier refusals are forgotten", token.label,
                     "the configured PIN" if role == USER else "an SO PIN")
        return result
