"""Secrets an operator's command asks for (the holder's passwords, recovery code, revocation
phrase): typed at a prompt that does not echo, or read from a file descriptor, never from the
command line (where every user of the machine can read them, and the shell's history keeps them)."""

from __future__ import annotations

import getpass
import io
import os
import sys

from signserver.ra.errors import OperationRefused


class SecretInput:
    """Asks for secrets one after another. With ``fd`` (``--secrets-fd``), each is the next line
    read from that file descriptor, in the order the prompts would ask them, a new password once
    (no confirmation line); else each is typed at the terminal, a new password twice."""

    def __init__(self, fd: int | None = None):
        self._fd = fd
        self._stream: io.TextIOBase | None = None

    def ask(self, what: str) -> str:
        """The secret named ``what`` (e.g. "the holder's recovery code").

        Raises: OperationRefused: it cannot be read (no terminal, the descriptor closed or
        unreadable, input ended).
        """
        if self._fd is not None:
            return self._next_line(what)
        if not sys.stdin.isatty():
            raise OperationRefused(f"no terminal to ask for {what}: give the secrets with --secrets-fd FD")
        try:
            return getpass.getpass(f"{what[0].upper()}{what[1:]}: ")
        except EOFError:
            raise OperationRefused(f"no {what} was typed") from None

    def ask_optional(self, what: str) -> str:
        """A secret the holder may go without: "" for an empty line, or when the descriptor has
        ended (else as ask()).

        Raises: OperationRefused: it cannot be read.
        """
        if self._fd is not None:
            try:
                return self._next_line(what)
            except _Ended:
                return ""
        return self.ask(f"{what} (empty: none)")

    def ask_new(self, what: str) -> tuple[str, str]:
        """A new secret and its confirmation (the same line twice from a descriptor).

        Raises: OperationRefused: as ask().
        """
        first = self.ask(what)
        if self._fd is not None:
            return first, first
        return first, self.ask(f"{what} again")

    def _next_line(self, what: str) -> str:
        try:
            if self._stream is None:
                self._stream = os.fdopen(self._fd, "r", encoding="utf-8", closefd=False)
            line = self._stream.readline()
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise OperationRefused(f"cannot read {what} from file descriptor {self._fd} "
                                   f"({type(exc).__name__})") from None
        if not line:
            raise _Ended(f"file descriptor {self._fd} ended before {what}")
        return line.rstrip("\r\n")


class _Ended(OperationRefused):
    """The descriptor ended before the secret asked for."""
