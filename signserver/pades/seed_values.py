"""A signature field's seed values (ISO 32000-1 12.7.4.5, /SV): the constraints the document's
author set on the signature that fills it, read and checked as this service signs.

pyHanko's PdfSigner reads them as the signature is made, and does one thing with them no server
may do: for a field whose seed value asks for a time-stamp (/TimeStamp /URL), it makes its own
time-stamper for the address the document names and posts to it, an address a client chose,
before any authorisation is checked. :class:`ServicePdfSigner` is pyHanko's signer that never
takes a time-stamping authority from a document: a signature is time-stamped by the configured
one, at B-T and above, or not at all. A field that requires a time-stamp (/TimeStamp /Ff 1) is refused
at B-B rather than signed without one, or with one the client did not ask for.

pyHanko also checks the field's other requirements only as the signature is made: too late to
refuse the document before the holder's factors are spent (see signable.py). They are checked
here first, against what this service signs with (SHA-256, ETSI.CAdES.detached, an approval
signature, the stamp's reason, the level's validation data). The signer's certificate
constraints (/Cert) depend on the credential, not on the client's input: pyHanko checks them
when the signature is made.
"""

from __future__ import annotations

import dataclasses

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import SigSeedSubFilter, SigSeedValFlags, SigSeedValueSpec
from pyhanko.sign.general import SigningError

from signserver.errors import InvalidArgument

# What prepare_document signs with.
SIGNED_DIGEST = "sha256"
SIGNED_SUBFILTER = SigSeedSubFilter.PADES


class ServicePdfSigner(signers.PdfSigner):
    """pyHanko's PdfSigner, but a field's seed value never names the time-stamping authority:
    the timestamper given (the configured TSA, or None at B-B) is the only one used; and its
    digest algorithms are read as :func:`served_seed_values` reads them."""

    def _retrieve_seed_value_spec(self, sig_field) -> SigSeedValueSpec | None:
        spec = super()._retrieve_seed_value_spec(sig_field)
        return served_seed_values(spec)


def served_seed_values(spec: SigSeedValueSpec | None) -> SigSeedValueSpec | None:
    """``spec`` without the address of a time-stamping authority (its requirement of a
    time-stamp kept), and with its digest algorithms named as pyHanko names its own: it reads
    /DigestMethod [/SHA256] as "/sha256", which no algorithm is, and so refused every field that
    requires one."""
    if spec is None:
        return None
    methods = None if spec.digest_methods is None else [str(name).lstrip("/") for name in spec.digest_methods]
    return dataclasses.replace(spec, timestamp_server_url=None, digest_methods=methods)


def field_seed_values(writer: IncrementalPdfFileWriter, field_name: str) -> SigSeedValueSpec | None:
    """The seed values of the existing signature field ``field_name`` of the document ``writer``
    updates, without a time-stamping authority's address; None for a new field or a field that
    states none.

    Raises: InvalidArgument: the field's seed values are malformed or ask for what no signer here
        provides (a signature handler other than Adobe.PPKLite, a seed value version beyond PDF
        2.0, an /MDP or /LockDocument entry of no known value).
    """
    for name, _, reference in fields.enumerate_sig_fields(writer.prev, filled_status=False):
        if name != field_name:
            continue
        seed = reference.get_object().get("/SV")
        if seed is None:
            return None
        seed = seed.get_object()
        if not isinstance(seed, generic.DictionaryObject):
            raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: its seed value "
                                  "(/SV) is not a dictionary")
        try:
            return served_seed_values(SigSeedValueSpec.from_pdf_object(seed))
        except SigningError as exc:
            detail = " ".join(str(exc).split())[:200]
            raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: {detail}") from None
        except (ValueError, TypeError, KeyError, AttributeError):
            raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: its seed value "
                                  "(/SV) is malformed") from None
    return None


def refuse_unmet_seed_values(spec: SigSeedValueSpec | None, field_name: str, reason: str | None,
                             timestamped: bool | None, long_term: bool | None) -> None:
    """Refuse to sign a field whose seed values ``spec`` require what this service's signature
    does not have: another digest or encoding, a certification signature, a named appearance,
    a reason other than ``reason``, a time-stamp (unless ``timestamped``), Adobe-style
    revocation data, or (unless ``long_term``) none. ``timestamped`` and ``long_term`` None:
    the level is not known yet, and what depends on it is left to be checked when it is.

    Raises: InvalidArgument: saying which of the field's requirements the signature would break.
    """
    if spec is None:
        return

    def refuse(why: str) -> None:
        raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: {why}")

    flags = spec.flags
    if spec.seed_signature_type is not None and spec.seed_signature_type.certification_signature():
        refuse("the field is meant for a certification signature, and this service makes approval signatures")
    if flags & SigSeedValFlags.SUBFILTER and spec.subfilters is not None:
        if not spec.subfilters or spec.subfilters[0] is not SIGNED_SUBFILTER:
            wanted = spec.subfilters[0].value.lstrip("/") if spec.subfilters else "an encoding no signer knows"
            refuse(f"the field requires the signature encoding {wanted}, and this service signs as "
                   f"{SIGNED_SUBFILTER.value.lstrip('/')} (PAdES)")
    if flags & SigSeedValFlags.APPEARANCE_FILTER and spec.appearance is not None:
        refuse(f"the field requires the named appearance {str(spec.appearance)[:100]!r}, which this service "
               "does not have")
    if flags & SigSeedValFlags.DIGEST_METHOD and spec.digest_methods is not None \
            and SIGNED_DIGEST not in spec.digest_methods:
        wanted = ", ".join(method.upper() for method in spec.digest_methods[:5]) or "none"
        refuse(f"the field requires the digest algorithm {wanted}, and this service signs documents with SHA-256")
    if flags & SigSeedValFlags.REASONS:
        _refuse_unlisted_reason(spec.reasons, reason, refuse)
    if flags & SigSeedValFlags.ADD_REV_INFO and spec.add_rev_info is not None:
        if spec.add_rev_info:
            refuse("the field requires Adobe-style revocation data inside the signature "
                   "(adbe.pkcs7.detached), and this service makes PAdES signatures, with their validation "
                   "data in the document (B-LT, B-LTA)")
        if long_term:
            refuse("the field forbids revocation data in the signature; sign at B-B or B-T")
    if spec.timestamp_required and timestamped is False:
        refuse("the field requires a time-stamp; sign at B-T or above (the service's own time-stamping "
               "authority stamps it)")


def _refuse_unlisted_reason(reasons: list[str] | None, reason: str | None, refuse) -> None:
    """A required /Reasons: none listed (or only ".") forbids giving one (ISO 32000-1 Table 234)."""
    if not reasons or reasons == ["."]:
        if reason:
            refuse("the field forbids giving a reason for signing; leave the stamp's reason empty")
    elif reason not in reasons:
        listed = ", ".join(repr(str(item)[:100]) for item in reasons[:10])
        refuse(f"the stamp's reason must be one the field lists: {listed}")
