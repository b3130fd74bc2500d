"""How a setting becomes a value: each ``as_*`` parser takes the key (for the error) and the value
as the file or the environment gave it; ``read_secret_file`` reads a secret a setting names.

Raises (every one): ConfigurationError naming the key and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from signserver.errors import ConfigurationError
from signserver.secret import Secret

# The largest arc every decoder reads: some keep arcs in signed 32-bit integers.
MAX_OID_ARC = 2**31 - 1


def read_secret_file(path: Path, key: str) -> Secret:
    """Read a secret kept alone in a file (surrounding whitespace stripped).

    Raises:
        ConfigurationError: the file is missing, unreadable, empty, or readable by others.
    """
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(key, f"no file at {path}") from None
    except UnicodeDecodeError:
        # Not the decoder's message: it quotes a byte of the secret and where it stands.
        raise ConfigurationError(key, f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(key, f"cannot read {path}: {exc}") from None
    if mode & 0o077:
        raise ConfigurationError(key, f"{path} is readable by other users; chmod 600 it")
    if not value:
        raise ConfigurationError(key, f"{path} is empty")
    return Secret(value)


def as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, "must be a non-empty string")
    return value.strip()


def as_fingerprints(key: str, value: Any) -> tuple[str, ...]:
    """SHA-256 fingerprints in hex (colons allowed): a list, or one string of them separated by
    commas or spaces (as an environment variable gives them).

    Raises: ConfigurationError: one is not 64 hex digits."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigurationError(key, "must be a SHA-256 fingerprint in hex, or a list of them")
    fingerprints = tuple(item.replace(":", "").strip().lower() for item in items)
    for fingerprint in fingerprints:
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ConfigurationError(key, f"{fingerprint!r} is not a SHA-256 fingerprint (64 hex digits)")
    return fingerprints


def as_str_or_empty(key: str, value: Any) -> str:
    """A string where empty means "none" (``csc.listen = ""``: no CSC front)."""
    return "" if isinstance(value, str) and not value.strip() else as_str(key, value)


def as_oid(key: str, value: Any) -> str:
    """A dotted object identifier whose every arc fits in 31 bits.

    Raises: ConfigurationError: not one."""
    parsed = as_str(key, value)
    # ASCII digits, no leading zeros, and under 0 and 1 a second arc below 40 (X.660): what every
    # encoder, cryptography's among them, takes.
    arcs = parsed.split(".")
    if (not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", parsed, flags=re.ASCII)
            or (arcs[0] in ("0", "1") and int(arcs[1]) > 39)):
        raise ConfigurationError(key, "must be a dotted object identifier such as 1.3.6.1.4.1.32473.1")
    if any(int(arc) > MAX_OID_ARC for arc in parsed.split(".")):
        raise ConfigurationError(key, f"every arc must be at most {MAX_OID_ARC}: larger ones (such as a 2.25 UUID "
                                      "arc) are more than some decoders read")
    return parsed


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(key, f"must be true or false, not {value!r}")


def as_int(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        number = _whole_number(key, value)
        if not low <= number <= high:
            raise ConfigurationError(key, f"must be between {low} and {high}, not {number}")
        return number
    return parse


def as_int_choice(*choices: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        number = _whole_number(key, value)
        if number not in choices:
            raise ConfigurationError(key, f"must be one of {', '.join(map(str, choices))}, not {number}")
        return number
    return parse


def _whole_number(key: str, value: Any) -> int:
    """Raises: ConfigurationError: ``value`` is neither an integer nor a string of one."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigurationError(key, f"must be a whole number, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(key, f"must be a whole number, not {value!r}") from None


# server.worker_memory_mb: below this a worker cannot start (one at rest holds about 200 MB of data).
MIN_WORKER_MEMORY_MB = 256
MAX_WORKER_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB: more than any machine this runs on


def as_memory_bound_mb(key: str, value: Any) -> int | str:
    """A memory bound in MiB (at least MIN_WORKER_MEMORY_MB), ``"auto"`` (the server derives it),
    or ``0`` / ``"none"`` for no bound; returns the number, ``"auto"``, or 0.

    Raises: ConfigurationError: none of these."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
        return "auto" if value.strip().lower() == "auto" else 0
    expected = (f'must be a number of MiB from {MIN_WORKER_MEMORY_MB} to {MAX_WORKER_MEMORY_MB}, "auto" '
                f'(derived from the machine and pades.max_document_mb) or "none" (0: no bound), not {value!r}')
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigurationError(key, expected)
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(key, expected) from None
    if number != 0 and not MIN_WORKER_MEMORY_MB <= number <= MAX_WORKER_MEMORY_MB:
        raise ConfigurationError(key, expected)
    return number


def as_choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigurationError(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value
    return parse
