"""Verification of every signature in a PDF: integrity, validity, trust, time, level, revocation,
and whether the document changed after signing (and whether that change is allowed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from signserver.errors import InvalidArgument


@dataclass(frozen=True)
class SignatureReport:
    field: str
    signer: str
    intact: bool
    valid: bool
    trusted: bool
    signing_time: str | None  # as the signer reported it, ISO 8601
    timestamp: str | None  # the signature time-stamp's time, when there is one
    timestamp_valid: bool | None
    level: str  # B-B, B-T, B-LT or B-LTA
    revocation: str  # "embedded", "not embedded"
    coverage: str  # "entire file", "entire revision", ...
    modified_after_signing: bool
    modification_allowed: bool
    summary: str


def _level(reader: PdfFileReader, signature, has_timestamp: bool) -> str:
    if not has_timestamp:
        return "B-B"
    dss = reader.root.get("/DSS")
    if dss is None:
        return "B-T"
    later_timestamps = [s for s in reader.embedded_signatures
                        if s.sig_object.get("/Type") == "/DocTimeStamp" and s.signed_revision > signature.signed_revision]
    return "B-LTA" if later_timestamps else "B-LT"


def verify_document(source: BinaryIO, validation_context_factory) -> list[SignatureReport]:
    """Check every signature (document time-stamps are reported through the level).

    ``validation_context_factory()`` makes a fresh pyHanko ValidationContext per signature.

    Raises: InvalidArgument: not a readable PDF.
    """
    try:
        reader = PdfFileReader(source, strict=False)
        signatures = reader.embedded_signatures
    except (PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidArgument(f"the document is not a readable PDF ({exc})") from None
    reports = []
    for signature in signatures:
        if signature.sig_object.get("/Type") == "/DocTimeStamp":
            continue
        context: ValidationContext = validation_context_factory()
        status = validate_pdf_signature(signature, signer_validation_context=context,
                                        ts_validation_context=validation_context_factory())
        timestamp = status.timestamp_validity
        coverage = status.coverage.name.replace("_", " ").lower() if status.coverage else "unknown"
        reports.append(SignatureReport(
            field=str(signature.field_name),
            signer=str(status.signing_cert.subject.human_friendly),
            intact=status.intact, valid=status.valid, trusted=status.trusted,
            signing_time=status.signer_reported_dt.isoformat() if status.signer_reported_dt else None,
            timestamp=timestamp.timestamp.isoformat() if timestamp else None,
            timestamp_valid=(timestamp.intact and timestamp.valid and timestamp.trusted) if timestamp else None,
            level=_level(reader, signature, timestamp is not None),
            revocation="embedded" if reader.root.get("/DSS") is not None else "not embedded",
            coverage=coverage,
            modified_after_signing=coverage != "entire file",
            modification_allowed=status.docmdp_ok is not False,
            summary=str(status.summary()),
        ))
    return reports
