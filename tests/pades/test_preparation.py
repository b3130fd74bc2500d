"""Validation data and container sizes are reused between documents, never beyond what they
depend on: a new CRL, an earlier time-stamp to extend, or the end of their lifetime."""

from __future__ import annotations

import asyncio
import datetime
import io

from asn1crypto import crl as asn1_crl
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.pades.document import PadesLevel
from signserver.pades.preparation import PreparationCache, PreparationKey
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from tests.conftest import enrol
from tests.pades.test_signing import sign


def embedded_revoked_serials(signed: bytes) -> set[int]:
    """The serials revoked by the CRLs in the document's DSS, which holds one CRL per CA: the
    current one, never one it superseded."""
    dss = DocumentSecurityStore.read_dss(PdfFileReader(io.BytesIO(signed)))
    listed = [asn1_crl.CertificateList.load(reference.get_object().data) for reference in dss.crls]
    issuers = [c["tbs_cert_list"]["issuer"].dump() for c in listed]
    assert len(issuers) == len(set(issuers)), "a superseded CRL was embedded"
    return {entry["user_certificate"].native for c in listed for entry in c["tbs_cert_list"]["revoked_certificates"]}


def test_a_revocation_reaches_the_next_document_at_once(pades_world):
    service = pades_world[0]
    before = sign(pades_world, sample_pdf(1), PadesLevel.B_LT)
    other, _ = enrol(service, holder_name="Outro Titular", kind=AccountKind.CORPORATE, organisation="Example Lda")
    issued = service.ca.issue(CertificateRequest("cloud-signature-corporate", other.account.username), "ra:test")
    assert int(issued.serial, 16) not in embedded_revoked_serials(before)

    service.ca.revoke(issued.serial, "keyCompromise", "ra:test")  # publishes a new CRL
    after = sign(pades_world, sample_pdf(1), PadesLevel.B_LT)
    assert int(issued.serial, 16) in embedded_revoked_serials(after)
    assert service.pades.verify_pdf(io.BytesIO(after)).signatures[0].trusted


def test_b_lta_over_a_time_stamped_document(pades_world):
    service = pades_world[0]
    once = sign(pades_world, sample_pdf(1), PadesLevel.B_LTA)
    twice = sign(pades_world, once, PadesLevel.B_LTA, StampOptions(box=(300, 40, 560, 110)))
    reports = service.pades.verify_pdf(io.BytesIO(twice)).signatures
    assert len(reports) == 2
    assert all(r.intact and r.valid and r.trusted and r.level == "B-LTA" for r in reports), \
        [r.summary for r in reports]


class CountingSession:
    """Stands in for pyHanko's signing session, whose two preparation steps it counts."""

    def __init__(self):
        self.validations = 0

    async def perform_presign_validation(self, writer):
        self.validations += 1
        return f"validation {self.validations}"

    async def estimate_signature_container_size(self, validation_info, tight):
        return 1000 + self.validations


def key(crl: bytes = b"crl") -> PreparationKey:
    return PreparationKey(b"certificate", "B-LT", "built-in", crl)


def test_the_cache_keeps_results_for_their_lifetime_only():
    cache = PreparationCache(lifetime=datetime.timedelta(seconds=60), size=2)
    session = CountingSession()
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    def prepare(k, at):
        return asyncio.run(cache.prepare(k, session, None, start + datetime.timedelta(seconds=at)))

    first = prepare(key(), 0)
    assert prepare(key(), 59) == first and session.validations == 1
    assert prepare(key(b"new crl"), 59).validation == "validation 2"
    assert prepare(key(), 61).validation == "validation 3"  # expired
    assert prepare(None, 61).validation == "validation 4"  # never cached
    assert prepare(None, 61).validation == "validation 5"
    prepare(key(b"third"), 62)  # the cache holds 2: the oldest goes
    assert prepare(key(b"new crl"), 62).validation == "validation 7"
