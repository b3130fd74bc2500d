"""What every command group takes as text: arguments refused before anything is done when they are
not text, and the answers an operator types at a confirmation question."""

from __future__ import annotations

import argparse
import sys

NOT_TEXT = "not valid UTF-8 text (check the terminal's encoding)"


def is_text(text: str) -> bool:
    """Whether ``text`` is text: a byte that is not UTF-8 (from a terminal, an environment
    variable or a file name in another encoding) reaches Python as a lone surrogate, which no
    database keeps, no certificate carries and no PKCS#11 call takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_argument(text: str) -> str:
    """An argparse ``type``: the argument as given, refused before anything is done (exit 2, as
    every usage error) when it is not text (see :func:`is_text`).

    Raises: argparse.ArgumentTypeError.
    """
    if not is_text(text):
        raise argparse.ArgumentTypeError(NOT_TEXT)
    return text


def ask(question: str) -> str | None:
    """The operator's answer at the terminal to ``question``, which is written to standard error
    (standard output may be a command's JSON). None when no answer came: the input ended (Ctrl-D)
    or what was typed is not text in the terminal's encoding; callers take that as "no"."""
    print(question, end="", file=sys.stderr, flush=True)
    try:
        return input()
    except EOFError:
        print(file=sys.stderr)  # the question's line was left open
        return None
    except UnicodeDecodeError:
        return None
