"""Where a running `signserver ra serve` serves its pages, for the RA's other processes. With
``ra.listen`` on port 0 (a free port chosen at start) and no ``ra.public_url``, only the serving
process knows the address of the pages, which the notice e-mails link to; so it records it in
<state_dir>/ra/serving.json (mode 0600, replaced whole) while it runs and removes it when it stops,
and the commands that send a notice (`signserver ra confirm-renewal`, `notices`, `resend-notice`)
read it. A file left by a server that was killed names a process no longer there: it is not used."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from signserver.ra.errors import SettingsError

FILE_NAME = "serving.json"
_URL = re.compile(r"https?://[^/?#\s]+")


def serving_file(state_dir: Path) -> Path:
    return Path(state_dir) / "ra" / FILE_NAME


@contextmanager
def recorded(state_dir: Path, listen: str, pages_url: str) -> Iterator[Path]:
    """``pages_url`` (and ``listen``, the address bound) recorded as this process's for as long as
    the block runs; removed after it, unless another server recorded its own meanwhile.

    Raises: SettingsError: the file cannot be written (the state directory is not writable)."""
    path = serving_file(state_dir)
    _write(path, {"pid": os.getpid(), "started": _started(os.getpid()), "listen": listen, "pages_url": pages_url})
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def running_pages_url(state_dir: Path) -> str:
    """The pages' address a running `signserver ra serve` of this state directory recorded; "" when
    none runs (no file, a file another user may have written, or one whose process is gone)."""
    found = _read(serving_file(state_dir))
    url, pid = found.get("pages_url"), found.get("pid")
    if not isinstance(url, str) or not _URL.fullmatch(url) or not isinstance(pid, int) or not _alive(pid):
        return ""
    if found.get("started") != _started(pid):  # the number was given to another process since
        return ""
    return url


def _write(path: Path, content: dict) -> None:
    """``content`` as ``path``, mode 0600, whole or not at all (a reader never sees half of it)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise SettingsError(f"state_dir: cannot record where the RA serves in {path} ({exc.strerror}); make "
                            "the folder writable by the RA's user") from None


def _read(path: Path) -> dict:
    """The file's content; {} when there is none, or it is not a regular file of this user that
    only its owner may write (an address another user put there would take holders elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            return {}
        try:
            content = json.loads(handle.read(4096))
        except (ValueError, UnicodeDecodeError):
            return {}
    return content if isinstance(content, dict) else {}


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat); None where unknown."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat_line.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: there, but not the RA this user ran
        return False
    return True
