"""Signing a PDF with PAdES baseline levels B-B, B-T, B-LT and B-LTA, and a visible stamp."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
from pyhanko.sign.timestamps import TimestampRequestError
from pyhanko_certvalidator import ValidationContext

from signserver.errors import InvalidArgument, UpstreamUnavailable
from signserver.pades.certification import keep_certification
from signserver.pades.damage import is_damage, refuse_without_end_marker
from signserver.pades.field_locks import refuse_broken_locks
from signserver.pades.cms_signer import HsmCmsSigner
from signserver.pades.long_term import append_long_term_data
from signserver.pades.metadata import refuse_unrepairable_metadata
from signserver.pades.placement import place_field, upright
from signserver.pades.preparation import PreparationCache, PreparationKey
from signserver.pades.prepared_signature import PostSignData, PreparedSignature
from signserver.pades.seed_values import ServicePdfSigner, field_seed_values, refuse_unmet_seed_values
from signserver.pades.stamp import StampOptions, check_text, refuse_unencodable, stamp_lines, stamp_style
from signserver.pades.writer import SigningWriter

log = logging.getLogger(__name__)


class PadesLevel(enum.Enum):
    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @classmethod
    def parse(cls, name: str) -> "PadesLevel":
        """Raises: InvalidArgument."""
        normalised = name.strip().upper().replace("_", "-")
        normalised = normalised if normalised.startswith("B-") else f"B-{normalised}"
        try:
            return cls(normalised)
        except ValueError:
            raise InvalidArgument(f"unknown PAdES level {name!r}; one of B-B, B-T, B-LT, B-LTA") from None

    @property
    def timestamped(self) -> bool:
        return self is not PadesLevel.B_B

    @property
    def long_term(self) -> bool:
        return self in (PadesLevel.B_LT, PadesLevel.B_LTA)


@dataclass(frozen=True)
class SigningJob:
    """Everything needed to sign one document, apart from the bytes."""

    signer: HsmCmsSigner
    holder_name: str
    level: PadesLevel
    stamp: StampOptions
    font: Path
    timestamper: object | None  # pyHanko TimeStamper, for B-T and above
    validation_context: ValidationContext | None  # our CA's revocation data, for B-LT and above
    now: datetime.datetime
    preparation: PreparationCache
    preparation_key: PreparationKey  # what the validation data and the container size depend on


# How a damaged document shows itself while pyHanko reads it: its own PdfError (PdfReadError
# included); RecursionError, as its object parser and its walks of field and page trees recurse
# once per level of nesting; the errors of the decoders it hands stream data to (zlib, struct for
# cross-reference streams and ASCII85, numbers past what Decimal or float hold); and, since much
# of its reading code indexes, converts and asserts on objects as it finds them, the errors of
# doing so on an object of the wrong kind or shape.
@contextlib.contextmanager
def _reading_the_document():
    """Turns the signs of a damaged document into InvalidArgument, where pyHanko reads it.

    Raises: InvalidArgument: the document is damaged.
    """
    try:
        yield
    except RecursionError:
        raise InvalidArgument("the document is damaged: its objects are nested deeper than any real "
                              "document's") from None
    except Exception as exc:
        if not is_damage(exc):
            raise
        log.info("a damaged document was refused", exc_info=exc)  # the detail, for whoever debugs a refusal
        raise InvalidArgument(f"the document is damaged: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    """What the client is told of a damaged document: pyHanko's own account of it; of another
    error (an object of the wrong kind where pyHanko reads one), no more than that, since its text
    names pyHanko's classes, not the document's (the log keeps it)."""
    if not isinstance(exc, PdfError):
        return "an object is not of the kind the PDF format requires there"
    detail = " ".join(str(exc.msg).split())
    return detail if len(detail) <= 200 else detail[:200] + "..."


def open_for_signing(source: BinaryIO) -> SigningWriter:
    """Raises: InvalidArgument: not a PDF (no end-of-file marker near its end), damaged, or encrypted."""
    refuse_without_end_marker(source)
    try:
        writer = SigningWriter(source, strict=False)
    except RecursionError:
        raise InvalidArgument("the document is not a readable PDF: it is damaged (objects nested too "
                              "deeply)") from None
    except Exception as exc:
        if not is_damage(exc):
            raise
        raise InvalidArgument(f"the document is not a readable PDF: it is damaged ({_describe(exc)})") from None
    if writer.prev.encrypted:
        raise InvalidArgument("the document is encrypted; remove the password first")
    return writer


@dataclass
class PreparedDocument:
    """A document with its signature placeholder written and its /ByteRange digest computed:
    what the holder authorises in the two-step flow. ``finish`` may be called once."""

    digest: bytes  # SHA-256 over the signed byte ranges
    _tbs: object
    _prepared: object
    _output: BinaryIO
    _signing_time: datetime.datetime
    _revinfo: object

    def finish(self) -> None:
        """Sign in the HSM, embed the CMS, then time-stamp and add validation data as the level asks.

        Raises: InvalidArgument (a pyHanko refusal), UpstreamUnavailable (the time-stamping
            authority refuses or answers wrongly), HsmError.
        """
        async def complete() -> None:
            post = await self._tbs.perform_signature(
                document_digest=self._prepared.document_digest,
                pdf_cms_signed_attrs=PdfCMSSignedAttributes(signing_time=self._signing_time,
                                                            adobe_revinfo_attr=self._revinfo))
            await append_long_term_data(self._output, post, self._signing_time)

        _run(complete())

    def signature(self) -> PreparedSignature:
        """The half-done signature as data, for :func:`finish_prepared` in any process."""
        return PreparedSignature(
            document_digest=self._prepared.document_digest,
            reserved_region_start=self._prepared.reserved_region_start,
            reserved_region_end=self._prepared.reserved_region_end,
            md_algorithm=self._tbs.md_algorithm, signing_time=self._signing_time,
            post_sign=PostSignData.of(self._tbs.post_sign_instructions))


def finish_prepared(output: BinaryIO, prepared: PreparedSignature, signer: HsmCmsSigner, timestamper,
                    validation_context: ValidationContext | None, now: datetime.datetime) -> None:
    """Finish a signature prepared by :func:`prepare_document`, maybe in another process, in
    ``output`` (the prepared document, readable, writable and seekable): sign in the HSM, embed
    the CMS, then time-stamp and add validation data as the level asks (pyHanko's interrupted
    signing), in a revision that records ``now``. ``timestamper`` is the TSA for B-T and above
    (None for B-B), ``validation_context`` the CA's for B-LT and above.

    Raises: InvalidArgument (a pyHanko refusal), UpstreamUnavailable (the time-stamping authority
        refuses or answers wrongly), HsmError.
    """
    async def finish() -> None:
        signature = await signer.async_sign(
            prepared.document_digest, prepared.md_algorithm, use_pades=True, timestamper=timestamper,
            signed_attr_settings=PdfCMSSignedAttributes(signing_time=prepared.signing_time))
        instructions = prepared.post_sign.instructions(timestamper) if prepared.post_sign else None
        signed = PdfTBSDocument.resume_signing(output, prepared.byte_range_digest(), signature,
                                               post_sign_instr=instructions,
                                               validation_context=validation_context)
        await append_long_term_data(output, signed, now)

    _run(finish())


def _run(coroutine):
    try:
        return asyncio.run(coroutine)
    except TimestampRequestError as exc:
        # pyHanko's word for a time-stamping authority's refusal or wrong answer (a nonce not
        # ours): the configured TSA's fault, never the client's, nor the server's own.
        raise UpstreamUnavailable(f"the time-stamping authority did not grant a time-stamp: {exc}") from None
    except SigningError as exc:
        raise InvalidArgument(f"the document cannot be signed: {exc}") from None
    except PdfError as exc:
        raise InvalidArgument(f"the document is damaged: {_describe(exc)}") from None
    except RecursionError:
        raise InvalidArgument("the document is damaged: its objects are nested deeper than any real "
                              "document's") from None


def prepare_document(source: BinaryIO, destination: BinaryIO, job: SigningJob) -> PreparedDocument:
    """Write ``source`` with a signature placeholder (and the stamp) to ``destination`` and
    compute the digest to sign; :meth:`PreparedDocument.finish` completes it.

    Raises:
        InvalidArgument: not a PDF, damaged (unreadable objects, a page tree that loops or nests
            past any real document's, objects nested too deeply), encrypted, field or page not
            found, rectangle off the page, text the font cannot draw or no PDF can hold, a
            certification or an earlier signature's lock that forbids the signature, a field
            whose seed values the signature would break (another digest or encoding, a reason
            not listed, a time-stamp required at B-B), or a signed document whose XMP metadata
            is malformed.
        UpstreamUnavailable: the time-stamping authority refuses or answers wrongly (B-T and above).
    """
    refuse_unencodable(job.stamp)
    writer = open_for_signing(source)
    writer.signed_at = job.now
    with _reading_the_document():
        refuse_unrepairable_metadata(writer)
        # A certified document is signed only as its certification allows (in the field it left).
        job = replace(job, stamp=keep_certification(writer, job.stamp))
        placement = place_field(writer, job.stamp)
        refuse_broken_locks(writer, placement.name)
        if placement.new_field is None:
            refuse_unmet_seed_values(field_seed_values(writer, placement.name), placement.name,
                                     reason=job.stamp.reason or None, timestamped=job.level.timestamped,
                                     long_term=job.level.long_term)
    field_name, new_field = placement.name, placement.new_field
    lines = stamp_lines(job.holder_name, job.stamp, job.now)
    style = None
    if job.stamp.visible:
        subset = check_text(lines, job.font)
        style = upright(stamp_style(lines, job.stamp, subset), placement.rotation, placement.user_unit)
    metadata = signers.PdfSignatureMetadata(
        field_name=field_name, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
        reason=job.stamp.reason or None, location=job.stamp.location or None, name=job.holder_name,
        embed_validation_info=job.level.long_term, use_pades_lta=job.level is PadesLevel.B_LTA,
        validation_context=job.validation_context if job.level.long_term else None)
    # Time-stamped by the configured authority alone, never by one a field's seed value names.
    pdf_signer = ServicePdfSigner(metadata, job.signer, timestamper=job.timestamper if job.level.timestamped else None,
                                  stamp_style=style, new_field_spec=new_field)
    params = {"url": job.stamp.verification_url} if job.stamp.verification_url else None

    async def prepare() -> PreparedDocument:
        session = pdf_signer.init_signing_session(writer)
        # The signing time (the CMS attribute, the signature's /M) from the service's clock, as the
        # stamp and the metadata have it; pyHanko would read the real time.
        session.system_time = job.now
        # A B-LTA signature on a time-stamped document must also validate the earlier time-stamps.
        extends_timestamps = job.level is PadesLevel.B_LTA and any(writer.prev.embedded_timestamp_signatures)
        preparation = await job.preparation.prepare(None if extends_timestamps else job.preparation_key,
                                                    session, writer, job.now)
        validation = preparation.validation
        tbs = session.prepare_tbs_document(validation_info=validation, bytes_reserved=preparation.bytes_reserved,
                                           appearance_text_params=params)
        prepared, output = tbs.digest_tbs_document(output=destination)
        return PreparedDocument(digest=prepared.document_digest, _tbs=tbs, _prepared=prepared, _output=output,
                                _signing_time=session.system_time,
                                _revinfo=validation.adobe_revinfo_attr if validation else None)

    with _reading_the_document():
        return _run(prepare())
