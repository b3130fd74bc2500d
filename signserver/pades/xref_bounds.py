"""A bound on the entries a PDF's cross-reference streams may declare, checked before pyHanko
reads them.

pyHanko reads a cross-reference stream's entries by the count its /Index (or /Size) declares.
Past the end of the stream's data, a lenient reader (``strict=False``, as documents to sign are
read) takes each missing entry as a default one, and a /W of zeros reads no data at all. So a
document of 1.5 kB declaring 300 million entries held a worker's CPU for minutes while it
allocated tens of GB (measured: MemoryError at a 3 GB limit after 28 s of CPU).

A document may therefore declare, over all its cross-reference streams, at most one entry per
BYTES_PER_ENTRY bytes of the document (MIN_ENTRIES at least) and never more than PDF's own limit
of indirect objects; an entry takes at least a byte of the stream's data. Real documents stay far
below: an object takes tens of bytes even in a compressed object stream. Cross-reference tables
need no bound: pyHanko reads 20 bytes of the document per entry and stops at its end.
"""

from __future__ import annotations

import io
import os
import weakref

from pyhanko.pdf_utils import misc, xref

MAX_ENTRIES = 8_388_607  # ISO 32000-1, Annex C.2: the most indirect objects a PDF file may hold
BYTES_PER_ENTRY = 8
MIN_ENTRIES = 4096

_declared: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()  # per reader, so far


def install() -> None:
    """Check every cross-reference stream pyHanko reads in this process from now on (idempotent).

    A stream declaring more entries than its document may have makes pyHanko's reading fail with
    its own PdfReadError, which the callers already take as a damaged document."""
    if getattr(xref.parse_xref_stream, "bounded", False):
        return
    unbounded = xref.parse_xref_stream

    def parse_xref_stream(xref_stream, strict: bool = True):
        _check(xref_stream)
        return unbounded(xref_stream, strict=strict)
    parse_xref_stream.bounded = True
    parse_xref_stream.__doc__ = unbounded.__doc__
    xref.parse_xref_stream = parse_xref_stream


def _check(xref_stream) -> None:
    """Raises: pyhanko's PdfReadError: the stream declares more entries than may be."""
    try:
        index = xref_stream.get("/Index", [0, xref_stream.get("/Size")])
        declared = sum(int(size) for _, size in misc.pair_iter(index))
        width = sum(int(w) for w in xref_stream.get("/W"))
    except (KeyError, TypeError, ValueError, misc.PdfError):
        return  # malformed otherwise: pyHanko's own reading refuses it
    if declared <= 0:
        return
    if width <= 0:
        raise misc.PdfReadError("a cross-reference stream declares entries with /W of zeros: it holds none")
    reader = _reader_of(xref_stream)
    limit = min(MAX_ENTRIES, max(MIN_ENTRIES, _document_size(reader) // BYTES_PER_ENTRY))
    so_far = _declared.get(reader, 0) + declared if reader is not None else declared
    if so_far > limit:
        raise misc.PdfReadError(f"the cross-reference streams declare {so_far:,} objects, more than a document "
                                f"of this size may hold ({limit:,})")
    if reader is not None:
        _declared[reader] = so_far


def _reader_of(xref_stream):
    reference = getattr(xref_stream, "container_ref", None)
    return getattr(reference, "pdf", None)


def _document_size(reader) -> int:
    """The size of the document ``reader`` reads, its position left as it was; 0 if unknown."""
    stream = getattr(reader, "stream", None)
    if isinstance(stream, io.BytesIO):
        with stream.getbuffer() as view:
            return view.nbytes
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    try:
        position = stream.tell()
        try:
            return stream.seek(0, os.SEEK_END)
        finally:
            stream.seek(position)
    except (AttributeError, OSError, ValueError):
        return 0
