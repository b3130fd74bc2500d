"""JsonArrayWriter: a JSON array printed an item at a time, as a listing's pages come, in the form
``json.dumps(items, indent=2)`` gives the whole list. A listing of a million certificates is never
in memory at once; what a reader gets stays one JSON value however the listing ends."""

from __future__ import annotations

import textwrap
from typing import Any, Iterable, TextIO

from signserver.terminal_text import json_text

INDENT = 2


class JsonArrayWriter:
    """Writes ``[`` with the first item, each item as it comes, and ``]`` at :meth:`close`.

    A listing that fails after its first item is closed all the same (:meth:`write_all`): a
    reader then holds a valid array of the items before the failure,
    and learns of the failure from the error output and the exit status. Before the first item
    nothing is written, so a listing that fails at once leaves the output to its error report.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.started = False  # the array's "[" is written
        self._closed = False

    def add(self, item: Any) -> None:
        """Write one item (JSON values only)."""
        text = textwrap.indent(json_text(item, indent=INDENT), " " * INDENT)
        self._stream.write((",\n" if self.started else "[\n") + text)
        self.started = True

    def close(self) -> None:
        """Write the array's end (``[]`` when no item came); once, whatever the calls."""
        if not self._closed:
            self._closed = True
            self._stream.write("\n]\n" if self.started else "[]\n")

    def write_all(self, items: Iterable[Any]) -> None:
        """Write each item as ``items`` yields it, then the array's end.

        Raises: what ``items`` raises; after the first item, once the array is closed, so that
        the output stays one JSON array of the items before the failure (:attr:`started` tells).
        """
        try:
            for item in items:
                self.add(item)
        except BaseException:
            if self.started:
                self.close()
            raise
        self.close()
