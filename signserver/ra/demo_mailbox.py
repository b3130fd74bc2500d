"""The demonstration's mailbox: an aiosmtpd handler that shows every e-mail it is sent (the RA's
codes and notices, the core's password-changed notice) on the console, decoded, and keeps each
under a folder as a text file, so that a person trying the pages reads them without a mail
server. `make run` serves it on loopback:

    python -m aiosmtpd -n -l 127.0.0.1:8025 -c signserver.ra.demo_mailbox.DemoMailbox var/mail

For development only: it accepts any message for anyone and delivers nowhere.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import itertools
import sys
from pathlib import Path
from typing import TextIO

RULE = "-" * 72


class DemoMailbox:
    """Prints each message's recipients, subject and text body to ``out`` and writes the same to
    ``folder`` (when given) as NNNN-<time>.txt."""

    def __init__(self, folder: Path | None = None, out: TextIO | None = None):
        self.folder = folder
        self._out = out or sys.stdout
        self._numbers = itertools.count(self._first_number())

    @classmethod
    def from_cli(cls, parser, *arguments: str) -> "DemoMailbox":
        """aiosmtpd's -c: the arguments after the class are the folder, at most."""
        if len(arguments) > 1:
            parser.error("DemoMailbox takes one argument: the folder the messages are kept in")
        return cls(Path(arguments[0]) if arguments else None)

    def _first_number(self) -> int:
        if self.folder is None or not self.folder.is_dir():
            return 1
        numbers = [int(p.name[:4]) for p in self.folder.glob("[0-9][0-9][0-9][0-9]-*.txt")]
        return max(numbers, default=0) + 1

    async def handle_DATA(self, server, session, envelope) -> str:
        text = shown(envelope.rcpt_tos, envelope.original_content or envelope.content)
        number = next(self._numbers)
        where = ""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.folder / f"{number:04d}-{datetime.datetime.now():%Y%m%dT%H%M%S}.txt"
            path.write_text(text, encoding="utf-8")
            where = f" (kept in {path})"
        print(f"{RULE}\nE-mail {number}{where}\n{text}{RULE}", file=self._out, flush=True)
        return "250 Message accepted for delivery"


def shown(recipients: list[str], raw: bytes) -> str:
    """A message as a person reads it: To, Subject and the plain-text body, decoded."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain", "html"))
    text = (body.get_content() if body is not None else "").replace("\r\n", "\n")  # SMTP's line ends
    return (f"To: {', '.join(recipients)}\nSubject: {message.get('Subject', '')}\n\n"
            f"{text.rstrip()}\n")
