"""The revocation reasons offered are the RFC 5280 reasons that mean something for this CA's
certificates: certificateHold would be a hold nobody could release (the CA publishes no
removeFromCRL), aACompromise is for attribute authorities. Refused, they revoke nothing; every
other reason revokes and is published in the CRL and by the OCSP responder."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.errors import InvalidArgument
from tests.conftest import enrol, service_with_ca

OPERATOR = "ra:test"


@pytest.fixture
def service(config, tmp_path, clock):
    return service_with_ca(config, tmp_path / "signserver.db", clock)


def issued(service):
    created, _ = enrol(service, f"why{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE, organisation="Example Lda")
    return service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), OPERATOR)


@pytest.mark.parametrize("reason", ["certificateHold", "aACompromise", "removeFromCRL", "holdOn"])
def test_a_reason_without_meaning_here_is_refused_and_revokes_nothing(service, reason):
    certificate = issued(service)
    with pytest.raises(InvalidArgument) as refused:
        service.ca.revoke(certificate.serial, reason, OPERATOR)
    assert reason in str(refused.value)
    assert service.ca.get(certificate.serial).status == "valid"


@pytest.mark.parametrize("reason", ["unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
                                    "superseded", "cessationOfOperation", "privilegeWithdrawn"])
def test_every_other_reason_revokes_and_is_in_the_crl(service, reason):
    certificate = issued(service)
    assert service.ca.revoke(certificate.serial, reason, OPERATOR).status == "revoked"
    crl = x509.load_der_x509_crl(service.ca.crl("issuing"))
    entry = crl.get_revoked_certificate_by_serial_number(int(certificate.serial, 16))
    assert entry is not None
    if reason != "unspecified":
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value == reason
