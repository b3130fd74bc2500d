"""The lock that keeps searches of a SoftHSM file token away from the objects being made on it.

SoftHSM 2.6.1 keeps each object of its file token in a file of the token directory, which every
process using the token reads. An object is made in steps (its file first holds default
attributes, then the caller's, then the key material), and a process that reads the attributes
of an object it found half made writes the defaults of what it did not see back into the file,
over what the maker wrote meanwhile: the new key loses its id and label, though its generation
succeeded, and no search finds it again (see signserver/hsm/new_objects.py for the figures).
The maker can see that through its handles, but only for a moment: the reader's write may land
after the maker has looked.

So each signserver process using SoftHSM holds an exclusive lock on a file of the token
directory, ``signserver-objects.lock`` (``directories.tokendir`` of ``SOFTHSM2_CONF``), while it
searches the token and reads what it found, and while it makes an object and checks it: the
searches of signserver's processes never meet an object half made by another. The lock is taken
by :func:`hold_token_files` and let go when the process's outermost PKCS#11 block ends
(:func:`signserver.hsm.module.pkcs11_calls`); calls that use handles already held (signing)
never take it. Other programs reading the token (OpenSC's pkcs11-tool) do not take it.

Other tokens keep their objects elsewhere, and nothing is locked for them.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "signserver-objects.lock"
SOFTHSM_DEFAULT_CONF = Path("/etc/softhsm/softhsm2.conf")

_path: Path | None = None  # the lock file, once a SoftHSM module is loaded in this process
_fd: int | None = None
_held = False


def lock_softhsm_tokens() -> None:
    """Lock the token directory of this process's SoftHSM configuration from now on (SoftHSM
    reads ``SOFTHSM2_CONF`` once, when the module is initialised: call then). Without a token
    directory to lock (no configuration, the database back-end) nothing is locked."""
    global _path
    _path = lock_path_of(Path(os.environ.get("SOFTHSM2_CONF") or SOFTHSM_DEFAULT_CONF))


def hold_token_files() -> None:
    """Take the lock, when this process uses a SoftHSM file token, until its outermost PKCS#11
    block ends; call inside :func:`signserver.hsm.module.pkcs11_calls`. Blocks while another
    process holds it. Where the lock file cannot be opened, goes on without it (logged once)."""
    global _fd, _held, _path
    if _held or _path is None:
        return
    if _fd is None:
        try:
            _fd = os.open(_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot open %s (%s): searches of the token may meet objects other processes are "
                        "making on it, and spoil them", _path, exc.strerror)
            _path = None
            return
    fcntl.flock(_fd, fcntl.LOCK_EX)
    _held = True


def let_go_of_token_files() -> None:
    """Release the lock if held; :func:`signserver.hsm.module.pkcs11_calls` calls it as its
    outermost block ends."""
    global _held
    if _held:
        _held = False
        fcntl.flock(_fd, fcntl.LOCK_UN)


def lock_path_of(conf: Path) -> Path | None:
    """The lock file of the token directory that SoftHSM configuration ``conf`` names; None
    where it names none, keeps its objects in a database, or cannot be read."""
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    settings = {}
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals and not name.lstrip().startswith("#"):
            settings[name.strip()] = value.strip()
    if settings.get("objectstore.backend", "file") != "file" or not settings.get("directories.tokendir"):
        return None
    return Path(settings["directories.tokendir"]) / LOCK_NAME


def _after_fork_in_child() -> None:
    # The parent's descriptor shares its lock with the child: the child opens its own.
    global _fd, _held
    if _fd is not None:
        os.close(_fd)
    _fd, _held = None, False


os.register_at_fork(after_in_child=_after_fork_in_child)
