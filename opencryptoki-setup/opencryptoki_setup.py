"""Prepare openCryptoki's soft token for signserver: daemon, slot, a freshly initialised token, PINs.

openCryptoki 3.8 keeps one soft token per system (/var/lib/opencryptoki/swtok): its data directory
cannot be chosen per run (``PKCS_APP_STORE`` gives a token whose objects are not kept, and the
``tokname`` of /etc/opencryptoki/opencryptoki.conf is system-wide and needs a daemon restart). And
it cannot re-initialise that token once its SO PIN was changed (see :func:`reset_soft_token`). So
each run, as root, stops pkcsslotd, erases the soft token's files, starts pkcsslotd again and
initialises the token with the default SO PIN 87654321, then sets its own SO PIN and user PIN
within the token's length limits (4 to 8 characters). Those PINs are kept in a file this script
owns (``--pins-file``, by default /var/lib/opencryptoki/signserver-test-pins, mode 0600) and stay
the same from run to run, so a copy left by an earlier or interrupted run is never a wrong try; a
PIN is only ever tried right after this script has set it.

Usage: opencryptoki_setup.py [STATE_DIR] [--label LABEL] [--pins-file PATH] [--module PATH]
Exit status 0 when the token is ready; 1 with a message on stderr otherwise. No PIN is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import grp
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import TokenFlag

DEFAULT_SO_PIN = "87654321"
SOFT_TOKEN_MODEL = "IBM SoftTok"
MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib/s390x-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib64/pkcs11/libopencryptoki.so",
    "/usr/lib/pkcs11/libopencryptoki.so",
)
DEFAULT_PINS_FILE = Path("/var/lib/opencryptoki/signserver-test-pins")
DAEMON = "/usr/sbin/pkcsslotd"
DAEMON_PID_FILE = Path("/var/run/pkcsslotd.pid")
DAEMON_SOCKET = Path("/var/run/pkcsslotd.socket")
SOFT_TOKEN_DIR = Path("/var/lib/opencryptoki/swtok")
TMPFILES_CONF = Path("/usr/lib/tmpfiles.d/opencryptoki.conf")
# What pkcsslotd and the soft token need when the package's tmpfiles were never applied (containers).
RUNTIME_DIRS = ("/var/lock/opencryptoki", "/var/lock/opencryptoki/swtok", "/var/lib/opencryptoki",
                "/var/lib/opencryptoki/swtok", "/var/lib/opencryptoki/swtok/TOK_OBJ", "/var/log/opencryptoki")
CKR_OK = 0


class SetupError(Exception):
    """The token cannot be prepared; the message says what to do."""


def find_module(given: str | None) -> Path:
    """Raises: SetupError: no openCryptoki module."""
    for candidate in ([given] if given else MODULE_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SetupError("openCryptoki's PKCS#11 module was not found; install the Debian package opencryptoki "
                     "(make installs it) or pass --module")


def daemon_running() -> bool:
    try:
        pid = int(DAEMON_PID_FILE.read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "pkcsslotd" and DAEMON_SOCKET.exists()
    except (OSError, ValueError):
        return False


def start_daemon() -> None:
    """Start pkcsslotd unless it runs: it must, before any process loads the module.

    Raises: SetupError: not running and cannot be started here (not root, package missing).
    """
    if daemon_running():
        return
    if not Path(DAEMON).is_file():
        raise SetupError(f"{DAEMON} is missing; install the Debian package opencryptoki")
    if os.geteuid() != 0:
        raise SetupError("openCryptoki's slot daemon pkcsslotd is not running; start it as root "
                         "(systemctl start pkcsslotd, or /usr/sbin/pkcsslotd)")
    try:
        grp.getgrnam("pkcs11")
    except KeyError:
        subprocess.run(["groupadd", "--system", "pkcs11"], check=True)
    if TMPFILES_CONF.is_file() and shutil.which("systemd-tmpfiles"):
        subprocess.run(["systemd-tmpfiles", "--create", str(TMPFILES_CONF)], check=False, capture_output=True)
    gid = grp.getgrnam("pkcs11").gr_gid
    for directory in RUNTIME_DIRS:
        path = Path(directory)
        if not path.is_dir():
            path.mkdir(parents=True, mode=0o770)
            os.chown(path, 0, gid)
    result = subprocess.run([DAEMON], capture_output=True, text=True)
    deadline = time.monotonic() + 10
    while not daemon_running():
        if time.monotonic() > deadline:
            raise SetupError(f"pkcsslotd did not start (exit {result.returncode}): {result.stderr.strip()}")
        time.sleep(0.05)


def read_pins(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return dict(line.strip().split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def write_pins(path: Path, pins: dict[str, str]) -> None:
    """Replace the file in one step (a crash leaves the old or the new content, never half)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("".join(f"{key}={value}\n" for key, value in pins.items()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def new_pin(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def soft_token_slot(lib: pkcs11.lib) -> pkcs11.Slot:
    """Raises: SetupError: no soft token slot (the daemon's configuration lacks libpkcs11_sw.so)."""
    for slot in lib.get_slots(token_present=True):
        if slot.get_token().model.strip() == SOFT_TOKEN_MODEL:
            return slot
    raise SetupError("openCryptoki shows no soft token; /etc/opencryptoki/opencryptoki.conf needs a slot "
                     "with stdll = libpkcs11_sw.so (restart pkcsslotd after changing it)")


def reset_soft_token() -> None:
    """Erase the soft token's data with the daemon stopped, then start the daemon again: the token
    is then as after installation (not initialised, SO PIN 87654321).

    openCryptoki 3.8.1 cannot re-initialise its soft token once the SO PIN was changed: C_InitToken
    with the current SO PIN succeeds, but every SO login afterwards fails (CKR_FUNCTION_FAILED with
    that PIN, CKR_PIN_INCORRECT with the default). Erasing its files is the only way back.

    Raises: SetupError: not root, or the daemon does not stop.
    """
    if os.geteuid() != 0:
        raise SetupError("resetting openCryptoki's soft token needs root (it erases "
                         f"{SOFT_TOKEN_DIR} with pkcsslotd stopped)")
    stop_daemon()
    for name in ("NVTOK.DAT", "MK_SO", "MK_USER"):
        (SOFT_TOKEN_DIR / name).unlink(missing_ok=True)
    for path in (SOFT_TOKEN_DIR / "TOK_OBJ").glob("*"):
        path.unlink()
    # The token's shared memory outlives processes; a stale one would bring the old token back.
    Path("/dev/shm", str(SOFT_TOKEN_DIR).strip("/").replace("/", ".")).unlink(missing_ok=True)
    start_daemon()


def stop_daemon() -> None:
    """Raises: SetupError: pkcsslotd does not stop within 10 s."""
    if not daemon_running():
        return
    pid = int(DAEMON_PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise SetupError(f"pkcsslotd (pid {pid}) did not stop")
        time.sleep(0.05)


def initialise(lib: pkcs11.lib, module: Path, slot: pkcs11.Slot, label: str, pins_file: Path) -> dict[str, str]:
    """Initialise the freshly reset token; returns the PINs now set. Both PINs stay the same from
    run to run (once chosen), so a copy an earlier run left is never a wrong try.

    Raises: SetupError: the token refused.
    """
    low, high = token_min_pin(slot), token_max_pin(slot)
    pin_length = max(low, min(8, high))
    pins = {key: value for key, value in read_pins(pins_file).items()
            if key in ("so_pin", "user_pin") and low <= len(value) <= high}
    pins.setdefault("so_pin", new_pin(pin_length))
    pins.setdefault("user_pin", new_pin(pin_length))
    write_pins(pins_file, pins)
    init = ctypes.CDLL(str(module)).C_InitToken
    init.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    init.restype = ctypes.c_ulong
    encoded = DEFAULT_SO_PIN.encode()
    rv = init(slot.slot_id, encoded, len(encoded), label.encode().ljust(32, b" "))
    if rv != CKR_OK:
        raise SetupError(f"C_InitToken on slot {slot.slot_id} failed (CKR 0x{rv:x})")
    token = lib.get_token(token_label=label)
    with token.open(rw=True, so_pin=DEFAULT_SO_PIN) as session:
        session.set_pin(DEFAULT_SO_PIN, pins["so_pin"])
    with token.open(rw=True, so_pin=pins["so_pin"]) as session:
        session.init_pin(pins["user_pin"])
    with token.open(user_pin=pins["user_pin"]):
        pass  # the PIN just set works: nothing later tries one that does not
    return pins


def token_min_pin(slot: pkcs11.Slot) -> int:
    return _token_info(slot).ulMinPinLen


def token_max_pin(slot: pkcs11.Slot) -> int:
    return _token_info(slot).ulMaxPinLen


class _TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("manufacturerID", ctypes.c_char * 32), ("model", ctypes.c_char * 16),
                ("serialNumber", ctypes.c_char * 16), ("flags", ctypes.c_ulong),
                ("ulMaxSessionCount", ctypes.c_ulong), ("ulSessionCount", ctypes.c_ulong),
                ("ulMaxRwSessionCount", ctypes.c_ulong), ("ulRwSessionCount", ctypes.c_ulong),
                ("ulMaxPinLen", ctypes.c_ulong), ("ulMinPinLen", ctypes.c_ulong),
                ("ulTotalPublicMemory", ctypes.c_ulong), ("ulFreePublicMemory", ctypes.c_ulong),
                ("ulTotalPrivateMemory", ctypes.c_ulong), ("ulFreePrivateMemory", ctypes.c_ulong),
                ("hardwareVersion", ctypes.c_ubyte * 2), ("firmwareVersion", ctypes.c_ubyte * 2),
                ("utcTime", ctypes.c_char * 16)]


_module_path: Path | None = None


def _token_info(slot: pkcs11.Slot) -> _TokenInfo:
    # python-pkcs11 does not expose the PIN length limits.
    info = _TokenInfo()
    function = ctypes.CDLL(str(_module_path)).C_GetTokenInfo
    function.argtypes = [ctypes.c_ulong, ctypes.POINTER(_TokenInfo)]
    function.restype = ctypes.c_ulong
    rv = function(slot.slot_id, ctypes.byref(info))
    if rv != CKR_OK:
        raise SetupError(f"C_GetTokenInfo on slot {slot.slot_id} failed (CKR 0x{rv:x})")
    return info


def write_state(state_dir: Path, module: Path, label: str, pins: dict[str, str]) -> None:
    (state_dir / "hsm").mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, key in (("so-pin", "so_pin"), ("user-pin", "user_pin")):
        path = state_dir / "hsm" / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(pins[key] + "\n")
        os.chmod(path, 0o600)
    (state_dir / "signserver.toml").write_text(
        "# openCryptoki's soft token (written by opencryptoki-setup)\n"
        'state_dir = "."\n\n[hsm]\n'
        f'module = "{module}"\ntoken_label = "{label}"\n')


@contextlib.contextmanager
def exclusive(pins_file: Path):
    """One setup at a time on this machine (the token is system-wide)."""
    with open(pins_file.with_name(pins_file.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str]) -> int:
    global _module_path
    parser = argparse.ArgumentParser(prog="opencryptoki-setup", description=__doc__.split("\n\n")[0])
    parser.add_argument("state_dir", nargs="?", default=os.environ.get("SIGNSERVER_STATE_DIR", "var"))
    parser.add_argument("--label", default=os.environ.get("SIGNSERVER_HSM_TOKEN_LABEL", "signserver"))
    parser.add_argument("--pins-file", type=Path, default=DEFAULT_PINS_FILE)
    parser.add_argument("--module")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir).resolve()
    try:
        module = find_module(args.module)
        _module_path = module
        args.pins_file.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(args.pins_file):
            reset_soft_token()
            lib = pkcs11.lib(str(module))
            slot = soft_token_slot(lib)
            pins = initialise(lib, module, slot, args.label, args.pins_file)
            lib.finalize()
        write_state(state_dir, module, args.label, pins)
    except SetupError as exc:
        print(f"opencryptoki-setup: {exc}", file=sys.stderr)
        return 1
    except p11.PKCS11Error as exc:
        print(f"opencryptoki-setup: the token refused: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"opencryptoki-setup: token {args.label!r} initialised in slot {slot.slot_id} of {module}; "
          f"configuration in {state_dir / 'signserver.toml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
