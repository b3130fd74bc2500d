"""Loading a PKCS#11 module once per process, and the one lock that guards every call into it.

python-pkcs11 initialises modules with ``C_Initialize(NULL)`` and releases the GIL during calls,
so SoftHSM runs without internal locking: two threads inside PKCS#11 at once crash the process.
Every call into a module therefore goes through :func:`pkcs11_calls`, which holds the lock (and
Ctrl-C, SIGTERM and SIGHUP until the calls have ended: python-pkcs11 raising KeyboardInterrupt
within a call can leave its memory corrupt, and a process ended while it logs in to a SoftHSM token
leaves the token unreadable, see :func:`pkcs11_calls`). The lock is held across
``fork()`` so that a child never inherits a module caught in the middle of a call, and a child
re-initialises the module before its first use (PKCS#11 state does not survive a fork).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pkcs11

from signserver.errors import ConfigurationError, HsmUnavailable
from signserver.hsm.token_files import let_go_of_token_files, lock_softhsm_tokens
from signserver.interrupts import interrupts_held

log = logging.getLogger(__name__)

_lock = threading.RLock()
_depth = 0  # pkcs11_calls blocks open in the thread holding _lock
_initialised_in: dict[str, int] = {}  # module path -> pid that initialised it
# module path -> how many times this process initialised it. Handles of one initialisation mean
# nothing in the next: SoftHSM numbers sessions and objects afresh, so an old handle may name a
# session another part of the process opened since, on another token.
_generations: dict[str, int] = {}


def pkcs11_lock() -> threading.RLock:
    """The process-wide lock to hold around every PKCS#11 call, key lookups included."""
    return _lock


@contextmanager
def pkcs11_calls() -> Iterator[None]:
    """Hold the PKCS#11 lock for the block, and Ctrl-C, SIGTERM and SIGHUP until the block's end
    (see signserver/interrupts.py).

    python-pkcs11 (0.10.1) packs a template into an array it allocates without clearing and, when
    packing an attribute raises, frees the entries it never set: a KeyboardInterrupt landing in
    the Python code that packs one makes the process abort ("free(): invalid pointer") or go on
    with its memory corrupt. Held, the Ctrl-C is acted on once the calls have ended. SoftHSM 2.6.1
    empties a token's file and writes it again at every login: a SIGTERM or SIGHUP that ended the
    process in between (a third of those sent to a process logging in again and again, measured
    here) left the token unreadable to every process; held, it ends the process once the calls
    have ended. The token files' lock, taken within the block by a search or as an object is made,
    is let go as the outermost block ends (see signserver/hsm/token_files.py).

    Raises: KeyboardInterrupt: Ctrl-C came during the block (raised once it has ended).
    """
    global _depth
    with interrupts_held(), _lock:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if not _depth:
                let_go_of_token_files()


def pkcs11_lock_is_free() -> bool:
    """Whether no other thread holds the PKCS#11 lock at this instant (a hint: another may take
    it the next moment)."""
    lock = _lock
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    global _lock, _depth
    _lock = threading.RLock()
    _depth = 0


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def use_softhsm_config(conf: Path) -> None:
    """Point SoftHSM at ``conf`` unless ``SOFTHSM2_CONF`` is already set.

    SoftHSM reads the variable when the module is initialised, so this must run first.
    """
    if "SOFTHSM2_CONF" not in os.environ and conf.is_file():
        os.environ["SOFTHSM2_CONF"] = str(conf)


def load_module(path: Path | None) -> pkcs11.lib:
    """Return the initialised module at ``path``; call with :func:`pkcs11_calls` held.

    In a forked child the module is finalised and initialised again on first use.

    Raises:
        ConfigurationError: no module path is configured.
        HsmUnavailable: the module cannot be loaded or initialised.
    """
    if path is None:
        raise ConfigurationError(
            "hsm.module",
            "no PKCS#11 module configured and SoftHSM's was not found; "
            "install softhsm2 (make installs it) or set hsm.module",
        )
    if not Path(path).is_file():
        raise HsmUnavailable(f"no PKCS#11 module at {path}; check hsm.module or --module")
    key = str(path)
    try:
        lib = pkcs11.lib(key)
        if _initialised_in.get(key, os.getpid()) != os.getpid():
            _reinitialise(key, lib)
        if _initialised_in.get(key) != os.getpid() and lib.manufacturer_id == "SoftHSM":
            lock_softhsm_tokens()
    except pkcs11.PKCS11Error as exc:
        raise _not_answering("initialise", path, exc) from exc
    _initialised_in[key] = os.getpid()
    return lib


def _not_answering(action: str, path: Path, exc: pkcs11.PKCS11Error) -> HsmUnavailable:
    """The error for a module that cannot be (re-)initialised, which may be reached from a call
    under way: its caller learns that the token does not answer; which module, and what it
    answered, are the operator's (logged)."""
    log.warning("cannot %s the PKCS#11 module %s: %r", action, path, exc)
    return HsmUnavailable("the token does not answer; try again later")


def module_generation(path: Path) -> int:
    """How many times this process has initialised the module again (fork included); a session
    or object handle is valid only in the generation it was obtained in. Call with
    :func:`pkcs11_calls` held."""
    return _generations.get(str(path), 0) if _initialised_in.get(str(path)) == os.getpid() else -1


def _reinitialise(key: str, lib: pkcs11.lib) -> None:
    _generations[key] = _generations.get(key, 0) + 1
    try:
        lib.finalize()
    except pkcs11.PKCS11Error:
        pass  # the inherited state may already be unusable: initialising again is what matters
    lib.initialize()


def reinitialise_module(path: Path) -> None:
    """Finalise and initialise the module again; every session of this process is lost.

    Used after the module reports that it is not initialised.

    Raises:
        HsmUnavailable: the module cannot be initialised again.
    """
    with pkcs11_calls():
        try:
            _reinitialise(str(path), pkcs11.lib(str(path)))
        except pkcs11.PKCS11Error as exc:
            raise _not_answering("re-initialise", path, exc) from exc


def release_module(path: Path | None) -> None:
    """Finalise the module in this process, so that processes forked afterwards initialise their
    own instead of inheriting this one's state; a later :func:`load_module` here initialises it
    again. Every session of this process is lost. Nothing happens if it was never loaded here.
    """
    if path is None:
        return
    key = str(path)
    with pkcs11_calls():
        if _initialised_in.pop(key, None) is None:
            return
        _generations[key] = _generations.get(key, 0) + 1
        try:
            pkcs11.lib(key).finalize()
        except pkcs11.PKCS11Error:
            pass  # already finalised under us: released either way


class _RawModule:
    """Direct calls for the few functions python-pkcs11 does not wrap.

    The module is already loaded and initialised by python-pkcs11 in this process; ``dlopen``
    returns the same instance, so these calls share its state.
    """

    CKR_OK = 0

    def __init__(self, path: Path):
        self._dll = ctypes.CDLL(str(path))

    def init_token(self, slot_id: int, so_pin: str, label: str) -> int:
        fn = self._dll.C_InitToken
        fn.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        fn.restype = ctypes.c_ulong
        pin = so_pin.encode("utf-8")
        padded_label = label.encode("utf-8").ljust(32, b" ")
        return fn(slot_id, pin, len(pin), padded_label)

    def close_all_sessions(self, slot_id: int) -> int:
        fn = self._dll.C_CloseAllSessions
        fn.argtypes = [ctypes.c_ulong]
        fn.restype = ctypes.c_ulong
        return fn(slot_id)


def raw_module(path: Path) -> _RawModule:
    """Calls that python-pkcs11 lacks (``C_InitToken``, ``C_CloseAllSessions``); call them with
    :func:`pkcs11_calls` held, after :func:`load_module`."""
    return _RawModule(path)
