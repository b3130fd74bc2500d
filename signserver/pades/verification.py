"""Verification of every signature in a PDF: integrity, validity, trust, time, level, revocation,
whether the document changed after signing and whether that change is allowed, and one verdict
for each signature and for the document.

Everything here is plain data in, plain data out (DER bytes, limits, frozen reports), with no HSM
or database: it runs as well in a child process as in the caller's.

A signature's verdict is true only when pyHanko finds it intact, valid and trusted (its signature
time-stamp too, when it has one) and its difference analysis (the default StandardDiffPolicy)
finds nothing after it but what the signature allows: the DSS and document time-stamp updates of
B-LT and B-LTA, and further signatures and form filling where DocMDP permits them. pyHanko
whitelists changes rather than blacklisting them: new page content, annotations other than
signature fields, and JavaScript are all "other" modifications.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

from asn1crypto import crl as asn1_crl, x509 as asn1_x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields
from pyhanko.sign.diff_analysis import ModificationLevel, SuspiciousModification
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from signserver.errors import InvalidArgument
from signserver.pades import xref_bounds
from signserver.pades.damage import is_damage, refuse_without_end_marker
from signserver.pades.page_tree import MAX_PAGE_TREE_DEPTH

xref_bounds.install()  # before any document is read here: see signserver.pades.xref_bounds

# Generous for real documents (a contract rarely carries more than a dozen signatures and a few
# dozen revisions), far below what makes verification run for minutes: the difference analysis
# of each signature reads every later revision, so the work grows with signatures x revisions.
MAX_SIGNATURES = 50
MAX_REVISIONS = 200
MAX_OBJECTS = 1_000_000
MAX_SECONDS = 20.0

# The modification levels a signature accepts after it, whatever its DocMDP says (pyHanko
# compares the level with DocMDP separately, in docmdp_ok).
ACCEPTED_LEVELS = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES, ModificationLevel.FORM_FILLING)
ACCEPTED_COVERAGE = (SignatureCoverageLevel.ENTIRE_FILE, SignatureCoverageLevel.ENTIRE_REVISION)
DOCUMENT_TIMESTAMP = "/DocTimeStamp"
REASON_LIMIT = 300  # characters of pyHanko's own explanation kept in a reason


@dataclass(frozen=True)
class TrustMaterial:
    """What verification trusts, as DER: root certificates, other (intermediate) certificates,
    CRLs; and the time it is done at, the service's (None: the machine's). Nothing is fetched
    from the network."""

    roots: tuple[bytes, ...]
    intermediates: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()
    moment: datetime.datetime | None = None

    def validation_context(self) -> ValidationContext:
        """A fresh pyHanko context (it caches what it validated, so one per signature)."""
        return ValidationContext(trust_roots=[asn1_x509.Certificate.load(der) for der in self.roots],
                                 other_certs=[asn1_x509.Certificate.load(der) for der in self.intermediates],
                                 crls=[asn1_crl.CertificateList.load(der) for der in self.crls],
                                 allow_fetching=False, moment=self.moment)


@dataclass(frozen=True)
class VerificationLimits:
    """How much verification work one document may ask for; over a limit it is refused."""

    max_signatures: int = MAX_SIGNATURES  # signatures and document time-stamps together
    max_revisions: int = MAX_REVISIONS  # incremental updates (cross-reference sections)
    max_objects: int = MAX_OBJECTS  # object entries over all revisions
    max_seconds: float = MAX_SECONDS  # checked before each signature


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
    modification_level: str  # "none", "lta updates", "form filling", "other"
    verdict: bool  # the one answer: this signature holds for the document as it is now
    reason: str  # why the verdict is what it is, for people
    contents_sha256: bytes  # of the signature's /Contents as stored: which signature this is


@dataclass(frozen=True)
class DocumentVerdict:
    """Every signature's report, and the document's verdict: true only when the document has at
    least one signature, every signature's verdict is true and every document time-stamp holds."""

    signatures: tuple[SignatureReport, ...]
    verdict: bool
    reason: str


def verify_file(path: str, trust: TrustMaterial, limits: VerificationLimits,
                elapsed: Callable[[], float] | None = None) -> DocumentVerdict:
    """Verify the PDF at ``path`` (``elapsed``: as for :func:`verify_stream`).

    Raises: InvalidArgument: the file cannot be read, is not a readable PDF, is damaged, or asks
    for more work than ``limits`` allow (the message names the limit and the value).
    """
    try:
        source = open(path, "rb")
    except OSError as exc:
        raise InvalidArgument(f"the document cannot be read ({exc.strerror})") from None
    with source:
        return verify_stream(source, trust, limits, elapsed)


def verify_stream(source: BinaryIO, trust: TrustMaterial, limits: VerificationLimits,
                  elapsed: Callable[[], float] | None = None) -> DocumentVerdict:
    """Verify the PDF read from ``source``. ``elapsed()`` gives the seconds spent so far (by
    default, since this call began on the monotonic clock).

    Raises: InvalidArgument: not a readable PDF, damaged, or over one of ``limits``.
    """
    if elapsed is None:
        started = time.monotonic()
        elapsed = lambda: time.monotonic() - started  # noqa: E731
    refuse_without_end_marker(source)
    try:
        reader = PdfFileReader(source, strict=False)
        _check_size(reader, limits)
        _check_page_tree(reader)
        signatures = reader.embedded_signatures
        # Read before any signature is validated: a damaged field tree is refused as above.
        unchecked = _unchecked_signatures(reader)
        removed = _removed_signatures(reader)
    except Exception as exc:
        if not is_damage(exc, SignatureValidationError):
            raise
        raise InvalidArgument(f"the document is damaged or not a readable PDF ({_brief(exc)})") from None
    if len(signatures) > limits.max_signatures:
        raise InvalidArgument(f"the document has {len(signatures)} signatures and time-stamps; "
                              f"verification takes at most {limits.max_signatures}")
    reports: list[SignatureReport] = []
    timestamp_failures: list[str] = []
    for checked, signature in enumerate(signatures):
        if elapsed() > limits.max_seconds:
            raise InvalidArgument(f"verification exceeds its limit of {limits.max_seconds:g} s after {checked} of "
                                  f"the document's {len(signatures)} signatures and time-stamps")
        try:
            if signature.sig_object.get("/Type") == DOCUMENT_TIMESTAMP:
                failure = _document_timestamp_failure(signature, trust)
                if failure:
                    timestamp_failures.append(failure)
            else:
                reports.append(_signature_report(reader, signature, trust))
        except Exception as exc:
            if not is_damage(exc, SignatureValidationError):
                raise
            raise InvalidArgument(f"the signature in field {_field(signature)!r} is damaged and cannot be checked: "
                                  f"{_brief(exc)}") from None
    return _document_verdict(tuple(reports), [*removed, *unchecked, *timestamp_failures])


def _check_size(reader: PdfFileReader, limits: VerificationLimits) -> None:
    """Refuse before any signature is validated: counting sections and entries reads only the
    cross-reference data that opening the document has parsed already."""
    revisions = reader.xrefs.total_revisions
    if revisions > limits.max_revisions:
        raise InvalidArgument(f"the document has {revisions} revisions; verification takes at most "
                              f"{limits.max_revisions}")
    objects = 0
    for revision in range(revisions):
        data = reader.xrefs.get_xref_data(revision)
        objects += len(data.explicit_refs_in_revision)
        if data.hybrid is not None:
            objects += len(data.hybrid.xref_data.explicit_refs_in_revision)
    if objects > limits.max_objects:
        raise InvalidArgument(f"the document has {objects} objects over its revisions; verification takes "
                              f"at most {limits.max_objects}")


def _unchecked_signatures(reader: PdfFileReader) -> list[str]:
    """Why each signed field that verification cannot check fails the document: pyHanko leaves
    a signature out of ``embedded_signatures`` (with a warning in the log only) when its SubFilter
    is not one it reads, such as the old adbe.x509.rsa_sha1 and adbe.pkcs7.sha1. Left out, such a
    signature, genuine or not, would not count in the verdict at all."""
    readable = {subfilter.value for subfilter in fields.SigSeedSubFilter}
    failures = []
    for name, value, _ in fields.enumerate_sig_fields(reader, filled_status=True):
        value = value.get_object()
        subfilter = value.get("/SubFilter") if isinstance(value, generic.DictionaryObject) else None
        if subfilter not in readable:
            shown = str(subfilter)[1:][:60] if isinstance(subfilter, generic.NameObject) else "none"
            failures.append(f"the signature in field {str(name)!r} cannot be checked: its format (SubFilter "
                            f"{shown}) is not one verification reads (adbe.pkcs7.detached, ETSI.CAdES.detached, "
                            "ETSI.RFC3161)")
    return failures


def _removed_signatures(reader: PdfFileReader) -> list[str]:
    """Why the document fails for signed fields that an earlier revision has and the document
    as it is now does not: a later revision took them out of the form, which no signature allows
    and which leaves nothing to check of them (a widget left on the page still shows the stamp)."""
    now = {str(name) for name, _, _ in fields.enumerate_sig_fields(reader, filled_status=True)}
    removed: list[str] = []
    for revision in range(reader.xrefs.total_revisions - 1):
        earlier = reader.get_historical_resolver(revision)
        removed += [str(name) for name, _, _ in fields.enumerate_sig_fields(earlier, filled_status=True)
                    if str(name) not in now and str(name) not in removed]
    if not removed:
        return []
    listed = ", ".join(repr(name) for name in removed[:5]) + (", ..." if len(removed) > 5 else "")
    return [f"a later revision removed signed fields of an earlier one ({listed}): the signatures in them "
            "no longer count and cannot be checked"]


def _check_page_tree(reader: PdfFileReader) -> None:
    """Load every page once, so that a damaged page tree is refused here rather than met halfway
    through a signature's difference analysis, or by whoever views the document after a "valid".

    Raises: PdfError: the tree loops or is deeper than any real document's; RecursionError: a
    page nests objects deeper than the parser can follow.
    """
    seen: set[tuple[int, int]] = set()
    pending = [(reader.root.raw_get("/Pages"), 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, generic.IndirectObject):
            if (node.idnum, node.generation) in seen:
                raise PdfError("the page tree loops (it reaches a node twice)")
            seen.add((node.idnum, node.generation))
        node = node.get_object()
        if depth > MAX_PAGE_TREE_DEPTH:
            raise PdfError("the page tree is deeper than any real document's")
        if not isinstance(node, generic.DictionaryObject):
            raise PdfError("the page tree holds something other than pages")
        if node.get("/Type") == "/Pages" or "/Kids" in node:
            kids = node.get("/Kids")
            if not isinstance(kids, generic.ArrayObject):
                raise PdfError("a page tree node has no kids")
            pending.extend((kid, depth + 1) for kid in kids)


def _signature_report(reader: PdfFileReader, signature: EmbeddedPdfSignature, trust: TrustMaterial) -> SignatureReport:
    status = validate_pdf_signature(signature, signer_validation_context=trust.validation_context(),
                                    ts_validation_context=trust.validation_context())
    timestamp = status.timestamp_validity
    coverage = _words(status.coverage) if status.coverage else "unclear"
    level = status.modification_level
    verdict, reason = _signature_verdict(status)
    return SignatureReport(
        field=_field(signature),
        signer=str(status.signing_cert.subject.human_friendly) if status.signing_cert is not None else "",
        intact=status.intact, valid=status.valid, trusted=status.trusted,
        signing_time=status.signer_reported_dt.isoformat() if status.signer_reported_dt else None,
        timestamp=timestamp.timestamp.isoformat() if timestamp else None,
        timestamp_valid=(timestamp.intact and timestamp.valid and timestamp.trusted) if timestamp else None,
        level=_level(reader, signature, timestamp is not None),
        revocation="embedded" if reader.root.get("/DSS") is not None else "not embedded",
        coverage=coverage,
        modified_after_signing=status.coverage != SignatureCoverageLevel.ENTIRE_FILE,
        modification_allowed=status.docmdp_ok is True,
        summary=str(status.summary()),
        modification_level=_words(level) if level is not None else "not analysed",
        verdict=verdict, reason=reason, contents_sha256=hashlib.sha256(signature.pkcs7_content).digest(),
    )


def _signature_verdict(status) -> tuple[bool, str]:
    """The first thing that fails, in the order a reader would check them."""
    if not status.intact:
        return False, "the signed bytes were altered: the signature does not match them"
    if not status.valid:
        return False, "the signature is not cryptographically valid"
    if not status.trusted:
        return False, "the signer's certificate does not lead to a trusted root, or is revoked"
    timestamp = status.timestamp_validity
    if timestamp is not None and not (timestamp.intact and timestamp.valid and timestamp.trusted):
        return False, "the signature's time-stamp is not valid or not trusted"
    if status.coverage not in ACCEPTED_COVERAGE:
        return False, "the signature does not cover a whole revision of the document"
    changes = _modification_failure(status)
    if changes:
        return False, changes
    if not status.bottom_line:  # seed value constraints, and anything pyHanko adds later
        return False, f"pyHanko judges the signature invalid ({_brief(status.summary())})"
    if status.modification_level == ModificationLevel.NONE:
        return True, "intact, valid and trusted; the document is unchanged since"
    return True, (f"intact, valid and trusted; changed since only by allowed updates "
                  f"({_words(status.modification_level)})")


def _modification_failure(status, docmdp_applies: bool = True) -> str:
    """Why the changes after a signature (or time-stamp) are not allowed, or "" when they are.
    A document time-stamp carries no DocMDP of its own (``docmdp_applies`` false): the level
    alone decides."""
    level = status.modification_level
    if level is None:
        return "the changes made after signing could not be analysed"
    detail = f": {_brief(status.diff_result)}" if isinstance(status.diff_result, SuspiciousModification) else ""
    if level not in ACCEPTED_LEVELS:
        return f"the document was changed after signing in a way no signature allows{detail}"
    if docmdp_applies and status.docmdp_ok is not True:
        return f"the document was changed after signing beyond what the signature permits ({_words(level)})"
    return ""


def _document_timestamp_failure(signature: EmbeddedPdfSignature, trust: TrustMaterial) -> str:
    """Why a document time-stamp does not hold, or "" when it does."""
    status = validate_pdf_timestamp(signature, validation_context=trust.validation_context())
    field = _field(signature)
    if not (status.intact and status.valid and status.trusted):
        return f"the document time-stamp in field {field!r} is not valid or not trusted"
    if status.coverage not in ACCEPTED_COVERAGE:
        return f"the document time-stamp in field {field!r} does not cover a whole revision"
    changes = _modification_failure(status, docmdp_applies=False)
    return f"document time-stamp in field {field!r}: {changes}" if changes else ""


def _document_verdict(reports: tuple[SignatureReport, ...], failures: list[str]) -> DocumentVerdict:
    """``failures``: what fails the document besides its signatures' reports (signatures removed
    or not checked, document time-stamps that do not hold), the first said first."""
    if not reports and not failures:
        return DocumentVerdict(reports, False, "the document has no signatures")
    failed = [r for r in reports if not r.verdict]
    if failed:
        first = failed[0]
        others = f" (and {len(failed) - 1} more signatures fail)" if len(failed) > 1 else ""
        return DocumentVerdict(reports, False, f"signature {first.field!r}: {first.reason}{others}")
    if failures:
        return DocumentVerdict(reports, False, failures[0])
    count = "the signature holds" if len(reports) == 1 else f"all {len(reports)} signatures hold"
    return DocumentVerdict(reports, True, f"{count}: intact, valid, trusted, and the document carries no "
                                          "change after signing that a signature does not allow")


def _level(reader: PdfFileReader, signature, has_timestamp: bool) -> str:
    if not has_timestamp:
        return "B-B"
    dss = reader.root.get("/DSS")
    if dss is None:
        return "B-T"
    later_timestamps = [s for s in reader.embedded_signatures
                        if s.sig_object.get("/Type") == DOCUMENT_TIMESTAMP
                        and s.signed_revision > signature.signed_revision]
    return "B-LTA" if later_timestamps else "B-LT"


def _field(signature: EmbeddedPdfSignature) -> str:
    try:
        return str(signature.field_name)
    except Exception as exc:
        if not is_damage(exc):
            raise
        return "?"


def _words(enum_value) -> str:
    return enum_value.name.replace("_", " ").lower()


def _brief(value) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + "..."
