"""The signs of a damaged document: what pyHanko, and the libraries under it, raise while reading
one. One list for every place that reads a document a client sent, so that each refuses the same
damage as the client's fault (InvalidArgument) rather than failing as the server's."""

from __future__ import annotations

import errno
import struct
import zlib

from pyhanko.pdf_utils.misc import PdfError

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
