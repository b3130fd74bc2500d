"""What B-LT and B-LTA append after the signature: the validation data (the DSS) and, for B-LTA,
a document time-stamp over it, in one revision written by :class:`SigningWriter`.

pyHanko's own post-signature processing does the same with its plain writer, which takes the real
time twice, once for the Info dictionary and once for the XMP packet: across a second's boundary
the two differ and a PDF/A file is no longer PDF/A (ISO 19005-1 6.7.3). Here the revision records
the moment it is given, as the signature's revision does. For B-LTA the time-stamp authority's
own validation data joins the same revision, before the document time-stamp that then covers it
(pyHanko writes it in a further revision of its own otherwise).
"""

from __future__ import annotations

import datetime
from typing import BinaryIO

from pyhanko.sign import validation
from pyhanko.sign.signers import constants
from pyhanko.sign.signers.pdf_signer import PdfPostSignatureDocument, PdfTimeStamper, TimestampDSSContentSettings

from signserver.pades.writer import open_revision


async def append_long_term_data(output: BinaryIO, signed: PdfPostSignatureDocument,
                                moment: datetime.datetime) -> None:
    """Append to the signed document in ``output`` what ``signed``'s post-signature instructions
    ask for (nothing at B-B and B-T), recording ``moment`` as the revision's modification time.

    Raises: PdfError, SigningError (from pyHanko).
    """
    instructions = signed.post_sign_instructions
    if instructions is None:
        return
    status = instructions.validation_info
    writer = open_revision(output, moment, strict=instructions.strict)
    store = validation.DocumentSecurityStore.supply_dss_in_writer(
        writer, signed.sig_contents, paths=status.validation_paths, ocsps=status.ocsps_to_embed,
        crls=status.crls_to_embed, validation_context=signed.validation_context,
        embed_roots=instructions.embed_roots)
    if instructions.timestamper is None:
        if store.modified:
            writer.write_in_place()
        return
    await PdfTimeStamper(instructions.timestamper, field_name=instructions.timestamp_field_name).async_timestamp_pdf(
        writer, instructions.timestamp_md_algorithm or constants.DEFAULT_MD, signed.validation_context,
        validation_paths=list(status.validation_paths), timestamper=instructions.timestamper, in_place=True,
        # Before the time-stamp, in the revision it covers; a VRI entry needs the time-stamp itself.
        dss_settings=TimestampDSSContentSettings(update_before_ts=True, include_vri=False),
        tight_size_estimates=instructions.tight_size_estimates, embed_roots=instructions.embed_roots)
