"""Earlier signatures' locks: what an approval signature, not only a certification, forbids the
signatures after it.

A signature field may carry a lock (ISO 32000-1 12.7.4.5, /Lock; its signature records it as a
FieldMDP transform): the form fields that may not change once it is signed (all of them, those
listed, or all but those listed), and since PDF 2.0 a DocMDP level (/P) the whole document must
keep from then on. Acrobat's "lock document after signing" is /P 1. Signing a field such a lock
covers, or adding a signature at all after /P 1, breaks the earlier signature in every validator,
this service's own included (pyHanko's difference analysis reads the same locks, through
EmbeddedPdfSignature, as here). So such a document is refused, as a certification with no changes
allowed is (certification.py), before the holder's factors are spent.
"""

from __future__ import annotations

import logging

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature

from signserver.errors import InvalidArgument
from signserver.pades.damage import is_damage

log = logging.getLogger(__name__)


def refuse_broken_locks(writer: IncrementalPdfFileWriter, field_name: str) -> None:
    """Refuse to sign the field ``field_name`` (existing or new) of the document ``writer``
    updates when an earlier signature's lock forbids it. An earlier signature whose CMS cannot
    be read is no lock to keep: it does not validate whatever follows it.

    Raises: InvalidArgument: an earlier signature locks the document (/P 1) or the field, or
        states a lock that cannot be read.
    """
    reader = writer.prev
    for name, value, field in fields.enumerate_sig_fields(reader, filled_status=True):
        if value.get_object().get("/Type") == "/DocTimeStamp":
            continue  # a document time-stamp locks nothing
        try:
            signature = EmbeddedPdfSignature(reader, field.get_object(), name)
        except Exception as exc:
            if not is_damage(exc):
                raise
            log.info("an earlier signature whose CMS cannot be read was left out of the locks", exc_info=exc)
            continue
        try:
            permission, lock = signature.docmdp_level, signature.fieldmdp
        except Exception as exc:
            if not is_damage(exc):
                raise
            raise InvalidArgument(f"the document cannot be signed: the lock of its signature {name!r} cannot be "
                                  "read") from None
        if permission is MDPPerm.NO_CHANGES:
            raise InvalidArgument(
                f"the document cannot be signed: its signature {name!r} locks it against any change (P=1), "
                "and a signature added to it would invalidate that one; ask its signer for a version "
                "that allows signing")
        if lock is not None and lock.is_locked(field_name):
            raise InvalidArgument(
                f"the document cannot be signed in the field {field_name!r}: its signature {name!r} locks "
                "that field, and signing it would invalidate that signature; sign a field the lock leaves "
                "open")
