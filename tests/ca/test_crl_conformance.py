"""The CRLs against RFC 5280, linted by pkilint's CRL linter; and a revocation is on the CRL
with it or not at all."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import update

from signserver.ca.authority import CertificateRequest
from signserver.ca.setup import ISSUING
from signserver.errors import SignServerError
from signserver.store.schema import authorities
from tests.ca.test_authority import holder
from tests.conftest import service_with_ca

LINT_CRL = Path(sys.executable).with_name("lint_crl")


def issued_certificate(service):
    created, _ = holder(service)
    return service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")


def pkilint(tmp_path, der: bytes, kind: str) -> str:
    """pkilint's RFC 5280 findings (WARNING and above) for a CRL (``kind`` CRL) or an ARL."""
    path = tmp_path / f"{kind}.crl"
    path.write_bytes(der)
    result = subprocess.run([str(LINT_CRL), "lint", "-t", kind, "-p", "PKIX", "-s", "WARNING", str(path)],
                            capture_output=True, text=True, timeout=120)
    return (result.stdout + result.stderr).strip() if result.returncode else ""


def test_crls_pass_pkilint_and_carry_number_next_update_reasons_and_key_identifier(ca_service, tmp_path):
    reasons = {"keyCompromise": x509.ReasonFlags.key_compromise, "superseded": x509.ReasonFlags.superseded,
               "unspecified": None}  # RFC 5280 5.3.1: unspecified SHOULD be left out
    serials = {}
    for reason in reasons:
        issued = issued_certificate(ca_service)
        ca_service.ca.revoke(issued.serial, reason, "ra")
        serials[issued.certificate.serial_number] = reason
    issuing, root = ca_service.ca.chain()
    der = ca_service.ca.crl("issuing")
    assert pkilint(tmp_path, der, "CRL") == ""
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(issuing.public_key())
    hours = ca_service.config.ca.crl_hours
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(hours=hours)
    key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert key_id == issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for serial, reason in serials.items():
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        found = [e.value.reason for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
        assert found == ([reasons[reason]] if reasons[reason] else [])
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    ca_service.ca.publish_crls()
    again = x509.load_der_x509_crl(ca_service.ca.crl("issuing"))
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    root_der = ca_service.ca.crl("root")
    assert pkilint(tmp_path, root_der, "ARL") == ""
    assert x509.load_der_x509_crl(root_der).is_signature_valid(root.public_key())


def test_a_revocation_whose_crl_cannot_be_signed_changes_nothing(config, tmp_path, ca_clock):
    # The issuing CA's key is not on the token (as when the HSM loses it): no CRL can be signed, so
    # the revocation must not happen either; a revocation that stood while the CRL said nothing of
    # it would be told to relying parties only at the next scheduled CRL, a day later.
    service = service_with_ca(config, tmp_path / "signserver.db", ca_clock)
    issued = issued_certificate(service)
    with service.database.transaction() as conn:
        key_id = conn.execute(authorities.select().where(authorities.c.name == ISSUING)).first().key_id
        conn.execute(update(authorities).where(authorities.c.name == ISSUING).values(key_id="00" * 20))
    crl_before = service.ca.crl("issuing")
    with pytest.raises(SignServerError):
        service.ca.revoke(issued.serial, "keyCompromise", "ra")
    assert service.ca.get(issued.serial).status == "valid"
    assert service.ca.crl("issuing") == crl_before
    with service.database.transaction() as conn:
        conn.execute(update(authorities).where(authorities.c.name == ISSUING).values(key_id=key_id))
    service.ca.revoke(issued.serial, "keyCompromise", "ra")  # the operator's retry succeeds
    crl = x509.load_der_x509_crl(service.ca.crl("issuing"))
    assert crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number) is not None
