"""Whether a document can be signed as asked, found before the holder's factors or activation
token are spent.

An activation authorises the SHA-256 of each document, each once: a document or an option the
signing would refuse only after spending it would cost the holder a new authorisation (password
and OTP) for a request that was malformed from the start. So every check that the client's input
decides runs first, with signserver.pades's own rules: the PDF opens (not damaged, not encrypted),
its metadata, its certification and its earlier signatures' locks allow another signature,
the field's seed values allow the signature made, the field, page and rectangle exist, the
time zone is known, the font draws the stamp's text and the text fits the box, the seal image
decodes. What only the server decides (the HSM, the time-stamping authority) can still fail
afterwards. The CSC API's signDoc checks before it spends a SAD; gRPC's one-call SignPdf before it
checks the factors, all but the stamp's text, which holds the holder's name: refused before the
factors, it would tell whether the account exists.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import BinaryIO

from signserver.errors import InvalidArgument, SignServerError
from signserver.pades.certification import keep_certification
from signserver.pades.damage import is_damage
from signserver.pades.document import PadesLevel, open_for_signing
from signserver.pades.field_locks import refuse_broken_locks
from signserver.pades.metadata import refuse_unrepairable_metadata
from signserver.pades.placement import place_field
from signserver.pades.seed_values import field_seed_values, refuse_unmet_seed_values
from signserver.pades.stamp import (StampOptions, check_text, check_verification_url, refuse_unencodable,
                                    seal_image, stamp_lines, stamp_style)
from signserver.pades.stamp_layout import fit_stamp

log = logging.getLogger(__name__)


def check_signable(source: BinaryIO, stamp: StampOptions, holder_name: str | None, font: Path,
                   now: datetime.datetime, level: PadesLevel | None = None) -> None:
    """Refuse what signing the document ``source`` with ``stamp`` at ``level`` would refuse of
    the client's input; with ``holder_name`` None, all but the stamp's text (which names the
    holder); with ``level`` None, all but what the level decides of the field's seed values
    (whether it requires a time-stamp, or forbids revocation data).

    Raises: InvalidArgument: not a PDF, damaged or encrypted; a certification, an earlier
        signature's lock or malformed metadata that forbid signing; a field whose seed values
        the signature would break (another digest or encoding, a certification, a reason not
        listed, or, at the level given, a time-stamp or revocation data); a field already
        signed, a page out of range, a rectangle off the page or too small for the text; an unknown time zone; text the font cannot draw
        or no PDF can hold (a lone surrogate, field: the option);
        a seal image that is unreadable, too large or cannot be decoded (field seal_image); a
        verification address too long for a QR code (field verification_url).
    """
    refuse_unencodable(stamp)
    source.seek(0)
    writer = open_for_signing(source)
    try:
        refuse_unrepairable_metadata(writer)
        stamp = keep_certification(writer, stamp)
        placement = place_field(writer, stamp)
        refuse_broken_locks(writer, placement.name)
        if placement.new_field is None:  # a field this service adds states no seed values
            refuse_unmet_seed_values(field_seed_values(writer, placement.name), placement.name,
                                     reason=stamp.reason or None,
                                     timestamped=level.timestamped if level is not None else None,
                                     long_term=level.long_term if level is not None else None)
    except SignServerError:
        raise
    except Exception as exc:
        if not is_damage(exc):
            raise
        log.info("a damaged document was refused before signing", exc_info=exc)
        raise InvalidArgument("the document is damaged: it cannot be read as a PDF to sign") from None
    finally:
        source.seek(0)
    lines = stamp_lines(holder_name or "", stamp, now)  # an unknown time zone is refused here
    if not stamp.visible:
        return
    if holder_name is None:
        if stamp.seal_png:
            seal_image(stamp.seal_png)
        if stamp.verification_url:
            check_verification_url(stamp.verification_url)
        return
    subset = check_text(lines, font)
    stamp_style(lines, stamp, subset)  # decodes the seal image
    if placement.new_field is not None:
        # A new field is drawn in the requested box (as displayed); an existing field's own
        # rectangle is the certifier's choice, checked when the stamp is drawn.
        x1, y1, x2, y2 = stamp.box
        width, height = x2 - x1, y2 - y1
        fit_stamp(lines, subset, width, height, reserved_width=min(width, height) if stamp.verification_url else 0.0)
