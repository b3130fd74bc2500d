"""The writer of every revision signing appends to a document."""

from __future__ import annotations

import datetime

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from signserver.pades import real_numbers, xref_bounds
from signserver.pades.metadata import record_signing
from signserver.pades.page_tree import walk_page_tree

xref_bounds.install()  # before any document is read here: see signserver.pades.xref_bounds
real_numbers.install()  # before any revision is written here: see signserver.pades.real_numbers


class SigningWriter(IncrementalPdfFileWriter):
    """pyHanko's incremental writer, walking the page tree with a bounded walk that refuses loops
    and finds the last page from the end (see signserver.pades.page_tree), and recording the
    revision's moment, ``signed_at``, alike in the Info dictionary and the XMP packet (see
    signserver.pades.metadata). pyHanko's own writer takes the real time, twice."""

    signed_at: datetime.datetime | None = None

    def _walk_page_tree(self, page_ix, retrieve_parent):
        return walk_page_tree(self.root, page_ix, retrieve_parent)

    def _update_meta(self):
        if self.signed_at is None:
            return super()._update_meta()
        record_signing(self, self.signed_at)


def open_revision(stream, moment: datetime.datetime, *, strict: bool) -> SigningWriter:
    """A writer of a new revision of the document in ``stream`` that records ``moment``.

    Raises: PdfError (from pyHanko: the document is damaged).
    """
    writer = SigningWriter(stream, strict=strict)
    writer.signed_at = moment
    return writer
