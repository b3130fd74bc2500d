"""A signature field's seed values (ISO 32000-1 12.7.4.5, /SV): the constraints the document's
author set on the signature that fills it, read and checked as this service signs.

pyHanko's PdfSigner reads them as the signature is made, and does one thing with them no server
may do: for a field whose seed value asks for a time-stamp (/TimeStamp /URL), it makes its own
time-stamper for the address the document names and posts to it, an address a client chose,
before any authorisation is checked. :class:`ServicePdfSigner` is pyHanko's signer that never
takes a time-stamping authority from a document: a signature is time-stamped by the configured one, at
B-T and above, or not at all. A field that requires a time-stamp (/TimeStamp /Ff 1) is refused
at B-B rather than signed without one, or with one the client did not ask for.
"""

from __future__ import annotations

import dataclasses

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import SigSeedValueSpec
from pyhanko.sign.general import SigningError

from signserver.errors import InvalidArgument


class ServicePdfSigner(signers.PdfSigner):
    """pyHanko's PdfSigner, but a field's seed value never names the time-stamping authority:
    the timestamper given (the configured TSA, or None at B-B) is the only one used."""

    def _retrieve_seed_value_spec(self, sig_field) -> SigSeedValueSpec | None:
        spec = super()._retrieve_seed_value_spec(sig_field)
        return without_timestamp_url(spec)


def without_timestamp_url(spec: SigSeedValueSpec | None) -> SigSeedValueSpec | None:
    """``spec`` without the address of a time-stamping authority (its requirement of a
    time-stamp kept)."""
    return None if spec is None else dataclasses.replace(spec, timestamp_server_url=None)


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
            return without_timestamp_url(SigSeedValueSpec.from_pdf_object(seed))
        except SigningError as exc:
            detail = " ".join(str(exc).split())[:200]
            raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: {detail}") from None
        except (ValueError, TypeError, KeyError, AttributeError):
            raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: its seed value "
                                  "(/SV) is malformed") from None
    return None


def refuse_unmet_seed_values(spec: SigSeedValueSpec | None, field_name: str, timestamped: bool | None) -> None:
    """Refuse to sign a field whose seed values ``spec`` require a time-stamp, unless
    ``timestamped`` (None: the level is not known yet, and the requirement is left to be checked
    when it is).

    Raises: InvalidArgument: saying which of the field's requirements the signature would break.
    """
    if spec is None:
        return
    if spec.timestamp_required and timestamped is False:
        raise InvalidArgument(f"the document cannot be signed in the field {field_name!r}: the field requires a "
                              "time-stamp; sign at B-T or above (the service's own time-stamping authority "
                              "stamps it)")
