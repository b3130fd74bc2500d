"""The signs of a damaged document: what pyHanko, and the libraries under it, raise while reading
one. One list for every place that reads a document a client sent, so that each refuses the same
damage as the client's fault (InvalidArgument) rather than failing as the server's; and the one
check every such place makes before pyHanko reads a byte."""

from __future__ import annotations

import errno
import io
import struct
import zlib
from typing import BinaryIO

from pyhanko.pdf_utils.misc import PdfError

from signserver.errors import InvalidArgument

# Malformed or missing entries, bad ASN.1 or compressed data, nesting deeper than the interpreter
# allows, pyHanko's own assertions about the structure it reads, and what it says it cannot read
# (NotImplementedError: a stream filter no reader knows, such as a misspelt /FlateDecode).
_SIGNS = (PdfError, RecursionError, zlib.error, struct.error, ArithmeticError, ValueError, KeyError, IndexError,
          TypeError, AttributeError, AssertionError, NotImplementedError)


def is_damage(exc: BaseException, *also: type[BaseException]) -> bool:
    """Whether ``exc``, raised while reading a client's document, says the document is damaged
    (``also``: more exception types the caller reads as damage).

    An offset the document gives before its own start makes the seek there fail with EINVAL:
    damage too. Every other I/O error is the server's own (its spool file), not the document's.
    """
    if isinstance(exc, OSError):
        return exc.errno == errno.EINVAL
    return isinstance(exc, (*_SIGNS, *also))


# Where a reader looks for the end-of-file marker: the last 1,024 bytes, as pyHanko (and Acrobat) do.
END_MARKER_WINDOW = 1024


def refuse_without_end_marker(source: BinaryIO) -> None:
    """pyHanko finds %%EOF by reading backwards a byte at a time, a line at a time, and checks
    that it stays within the last 1,024 bytes only between lines: a body without a line break
    near its end is read through whole so (0.3 us a byte, a minute of a worker's CPU for the
    200 MB a document may have). Here the window is read once, beforehand.

    Raises: InvalidArgument: no %%EOF in the last END_MARKER_WINDOW bytes.
    """
    start = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(max(start, size - END_MARKER_WINDOW))
    tail = source.read(END_MARKER_WINDOW)
    source.seek(start)
    if b"%%EOF" not in tail:
        raise InvalidArgument(f"the document is not a readable PDF: it has no end-of-file marker (%%EOF) in its "
                              f"last {END_MARKER_WINDOW:,} bytes")
