"""The process's one logged-in session to a token: opened lazily, reopened once when lost."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import pkcs11
import pkcs11.exceptions as p11
# The search that Session.get_objects wraps (python-pkcs11 0.10.1, pinned): run here with a batch of
# one object, so that an object destroyed meanwhile ends no more than its own batch (see find).
from pkcs11._pkcs11 import SearchIter

from signserver.errors import HsmLoginFailed, InvalidArgument, TokenNotFound
from signserver.hsm.capabilities import TokenCapabilities
from signserver.hsm.label_text import LabelTextMapper
from signserver.hsm.module import load_module, module_generation, pkcs11_calls, reinitialise_module, release_module
from signserver.hsm.pin_guard import PinGuard
from signserver.hsm.token_files import hold_token_files
from signserver.hsm.translate import is_session_lost, translate
from signserver.monitoring.meter import meter
from signserver.secret import Secret

log = logging.getLogger(__name__)
T = TypeVar("T")
LOGIN_ATTEMPTS = 3
# What a handle kept from an earlier call raises once its object is gone (within a session that is
# still current: a re-initialised module or a fork is noticed before any call, see _open).
STALE_HANDLE = (p11.KeyHandleInvalid, p11.ObjectHandleInvalid)


@dataclass(frozen=True)
class TokenDescription:
    """What the token says about itself."""

    label: str
    model: str
    manufacturer: str
    serial: str
    mechanisms: frozenset[pkcs11.Mechanism]


def find_token(lib: pkcs11.lib, label: str, module: Path) -> pkcs11.Token:
    """Return the token labelled ``label``; call with the PKCS#11 lock held.

    Raises:
        TokenNotFound: no initialised token has that label.
    """
    tokens = []
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        if token.label == label:
            return token
        if token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            tokens.append(token.label)
    present = ", ".join(repr(t) for t in tokens) or "none"
    raise TokenNotFound(
        f"no token labelled {label!r} in {module} (tokens present: {present}); "
        "check hsm.token_label, or create it with `signserver hsm init`"
    )


class TokenSession:
    """One read-write session, logged in as the user, shared by every thread of the process.

    Every PKCS#11 call goes through :meth:`run`, which holds the process-wide PKCS#11 lock. When
    the session, the login or a cached handle is lost (sessions closed under the server, module
    re-initialised, process forked), the session is opened again and the operation retried
    once. A PIN the token refused is never tried again by this object; with a ``guard`` (the
    service always gives one), every login is checked first and a refusal is remembered across
    processes (see :mod:`signserver.hsm.pin_guard`). Without one the PIN is tried as given, for
    tools and tests that choose to.
    """

    def __init__(self, module: Path | None, token_label: str, user_pin: Secret, guard: PinGuard | None = None):
        self.module = module
        self.token_label = token_label
        self._user_pin = user_pin
        self._guard = guard
        self._session: pkcs11.Session | None = None
        self._token: pkcs11.Token | None = None
        self._pid = os.getpid()
        self._generation = -1  # the module's generation the session was opened in
        self._pin_refused = False
        # Objects found through the current session, by whatever key their user chooses;
        # emptied whenever the session is opened again, since handles may then be stale.
        self.cache: dict[Any, Any] = {}
        # Object searches (C_FindObjectsInit) made through :meth:`find` since this object was
        # made, across reopened sessions: tests read it to prove a path never searches.
        self.searches = 0
        # Objects those searches found and another process destroyed before they were read.
        self.vanished = 0
        self._capabilities: TokenCapabilities | None = None

    def run(self, operation: Callable[[pkcs11.Session], T], doing: str) -> T:
        """Run ``operation(session)`` under the PKCS#11 lock, reopening the session once if lost.

        ``doing`` completes "cannot ..." in error messages.

        Raises:
            HsmLoginFailed: the token refused the PIN (now or earlier in this process).
            HsmLoginWithheld: the guard did not try the PIN (refused before, or wrong tries
                reported by the token); HsmPinLocked: the token reports the PIN locked.
            ConfigurationError: the guard's file cannot be read or written.
            HsmUnavailable: the module or token does not answer, even after reopening.
            TokenNotFound: the configured token is not present.
            SignServerError: the operation's own errors, translated.
            KeyboardInterrupt: Ctrl-C came during the call (raised once it has ended).
        """
        asked = time.perf_counter()
        try:
            with pkcs11_calls():
                taken = time.perf_counter()
                try:
                    return self._run_locked(operation, doing)
                finally:
                    released = time.perf_counter()
        finally:
            # Reported once the lock is free: the report's own time is nobody's wait.
            meter().hsm_lock_released(taken - asked, released - taken)

    def _run_locked(self, operation: Callable[[pkcs11.Session], T], doing: str) -> T:
        """:meth:`run`'s work, with the PKCS#11 lock held. Raises: as :meth:`run`."""
        try:
            return operation(self._open())
        except p11.PKCS11Error as exc:
            if not is_session_lost(exc):
                raise translate(exc, doing) from exc
            if isinstance(exc, STALE_HANDLE):
                # The session is fine: an object whose handle this process kept (in :attr:`cache`)
                # was destroyed through another session, e.g. by another process's `hsm master`
                # command. Expected; reopening clears the cache, so the object is looked up again.
                log.info("a key handle this process kept is no longer valid (%s: destroyed, e.g. by another "
                         "process) while trying to %s; looked up again", type(exc).__name__, doing)
            else:
                log.warning("HSM session lost (%s) while trying to %s; opening it again",
                            type(exc).__name__, doing)
            self._drop(reinitialise="not initialized" in str(exc))
            meter().hsm_session_reopened()
        try:
            return operation(self._open())
        except p11.PKCS11Error as exc:
            raise translate(exc, doing) from exc

    def find(self, session: pkcs11.Session, template: dict[pkcs11.Attribute, Any]) -> list[pkcs11.Object]:
        """Every object matching ``template``; call inside :meth:`run` with its session.

        The one way signserver searches a token, so that searches can be counted: SoftHSM walks
        every object of the token for each one (two file reads per object), holding the
        process-wide PKCS#11 lock meanwhile, so a search costs in proportion to the token's
        objects. Request paths find their keys once per session and keep the handles in
        :attr:`cache`. An object the search found and another process destroyed before it was
        read is left out, as a search made a moment later would: the session is fine.

        Raises: pkcs11.PKCS11Error, which :meth:`run` translates. InvalidArgument: a string of
            ``template`` is not UTF-8 text, which python-pkcs11 fails to encode part way through
            starting the search, and the process then dies of a segmentation fault: refused first.
        """
        for value in template.values():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidArgument("cannot search the token for a label that is not valid UTF-8 text") from None
        hold_token_files()  # until the end of the call: what was found is read there
        self.searches += 1
        found: list[pkcs11.Object] = []
        # python-pkcs11 reads each object as it hands it over. One that another process destroyed
        # since the search found it raises there and ends its batch: get_objects' batches of ten
        # ended the whole search, which a stale handle then sent to run (a new session, so a new
        # login, and each login rewrites SoftHSM's token file: see the README), or, made again,
        # met the next destroyed object under another process making and destroying keys. A
        # batch of one ends with its object alone: one more C_FindObjects call per object found.
        with SearchIter(session, template, 1) as search:
            for batch in search:
                try:
                    found.extend(batch)
                except STALE_HANDLE:
                    self.vanished += 1
        return found

    def describe(self) -> TokenDescription:
        """Return the token's label, model, manufacturer, serial and mechanisms.

        Raises: as :meth:`run`.
        """
        def read(_session: pkcs11.Session) -> TokenDescription:
            token = self._token.slot.get_token()  # fresh C_GetTokenInfo: proves the token answers
            return TokenDescription(
                label=token.label,
                model=token.model,
                manufacturer=token.manufacturer_id,
                serial=token.serial.decode("ascii", "replace").strip(),
                mechanisms=frozenset(m for m in self._token.slot.get_mechanisms()
                                     if isinstance(m, pkcs11.Mechanism)),
            )
        return self.run(read, "read the token's description")

    def capabilities(self) -> TokenCapabilities:
        """The token's mechanism list (read once per object), from which every choice of
        mechanism or algorithm is made. Raises: as :meth:`run`."""
        if self._capabilities is None:
            self._capabilities = TokenCapabilities(self.describe().mechanisms)
        return self._capabilities

    def close(self) -> None:
        """Log out and close the session (a later :meth:`run` opens a new one)."""
        with pkcs11_calls():
            self._drop(reinitialise=False)

    def check_login(self) -> None:
        """Log in now (normally done at first use), then close the session and release the
        module, so that processes forked afterwards log in on their own.

        Raises: as :meth:`run`; HsmLoginWithheld, HsmPinLocked: the PIN was not tried.
        """
        try:
            self.run(lambda _session: None, f"log in to token {self.token_label!r}")
        finally:
            self.close()
            release_module(self.module)

    def _open(self) -> pkcs11.Session:
        if self._pid != os.getpid():
            # A forked child: the inherited session belongs to the parent's module state.
            self._session, self._token, self._pid = None, None, os.getpid()
            self.cache.clear()
        if self._session is not None and not self._current():
            # The module was initialised again since (by another session object looking for a
            # new token, say): the handle may now name someone else's session. Forget it unclosed.
            self._session, self._token = None, None
            self.cache.clear()
        if self._session is not None:
            return self._session
        if self._pin_refused:
            raise HsmLoginFailed(
                f"the token {self.token_label!r} refused the configured PIN earlier; it is not "
                "tried again: correct the PIN and restart"
            )
        token, session = self._find_and_log_in()
        self._session, self._token = session, token
        self._generation = module_generation(self.module)
        self.cache.clear()
        return session

    def _log_in(self, token: pkcs11.Token) -> pkcs11.Session:
        """A read-write session on ``token``, logged in as the user. Raises: pkcs11.PKCS11Error
        (PinIncorrect remembered: the PIN is not tried again), and the guard's errors."""
        try:
            if self._guard is not None:
                return self._guard.login(token, self._user_pin)
            return token.open(rw=True, user_pin=self._user_pin.reveal(), attribute_mapper=LabelTextMapper())
        except p11.PinIncorrect:
            self._pin_refused = True
            raise
        except p11.UserAlreadyLoggedIn:
            # PKCS#11 logins belong to the application: another session of ours is logged in.
            return token.open(rw=True, attribute_mapper=LabelTextMapper())

    def _current(self) -> bool:
        """Whether the session's handle still belongs to this process's module state."""
        return self._pid == os.getpid() and self._generation == module_generation(self.module)

    def _find_and_log_in(self) -> tuple[pkcs11.Token, pkcs11.Session]:
        """The token and a session logged in to it. SoftHSM reads its tokens when the module is
        initialised, and rewrites a token's file at every login: a process misses a token another
        process creates later, and one that another process is writing at that moment (about 4 %
        of initialisations while keys are being generated elsewhere, measured here), or holds it
        half read or without its user PIN (its logins then fail, GeneralError or
        UserPinNotInitialized). A worker started then would never sign; initialise the module
        again and try again before giving up. Raises: as :meth:`run`."""
        def attempt() -> tuple[pkcs11.Token, pkcs11.Session]:
            token = find_token(load_module(self.module), self.token_label, self.module)
            return token, self._log_in(token)

        for tried in range(1, LOGIN_ATTEMPTS):
            try:
                return attempt()
            except (TokenNotFound, p11.GeneralError, p11.UserPinNotInitialized):
                time.sleep(0.05 * tried)  # the other process's write is a moment's work
                reinitialise_module(self.module)
        return attempt()

    def _drop(self, reinitialise: bool) -> None:
        session, self._session = self._session, None
        self.cache.clear()
        if session is not None and self._current():
            try:
                session.close()
            except p11.PKCS11Error:
                pass  # already gone: that is why it is being dropped
        if reinitialise and self.module is not None:
            reinitialise_module(self.module)
