"""What a command prints, safe for a terminal: no character a terminal acts on or that reorders
what follows it (C0 and C1 controls, DEL, bidirectional and other formatting characters: Unicode's
categories Cc and Cf), whoever put it in a key's label or a holder's data. The text stays the same
for a reader: a table shows each such character as a backslash escape, JSON as its ``\\uXXXX``."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

_UNPRINTABLE = ("Cc", "Cf")


def _unprintable(character: str) -> bool:
    return unicodedata.category(character) in _UNPRINTABLE


def shown(text: str) -> str:
    """``text`` with each control or formatting character as ``\\x9b``, ``\\u202e`` or
    ``\\U000e0001``, as Python writes it in a string's repr."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if _unprintable(c) else c for c in text)


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` with each control or formatting
    character written as JSON's ``\\uXXXX`` (a surrogate pair beyond U+FFFF): the same value
    for any JSON reader. JSON itself escapes only C0 controls, quotes and backslashes."""
    text = json.dumps(value, ensure_ascii=False, **options)
    if text.isascii():  # C0 controls are escaped in strings already; outside them, whitespace
        return text
    return "".join(_escaped(c) if c > "\x7f" and _unprintable(c) else c for c in text)


def _escaped(character: str) -> str:
    return json.dumps(character, ensure_ascii=True)[1:-1]
