"""Accounts named under the first rule for account names (letters, digits, '.', '-', '_' and '@')
get certificates as any other: the subject's serialNumber, a PrintableString, holds their name
with ':' for '_' and '/' for '@', characters no account name has."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update
from cryptography import x509
from cryptography.x509.oid import NameOID

from signserver.accounts import manager
from signserver.ca.authority import CertificateRequest
from signserver.errors import CertificateRefused, InvalidArgument
from signserver.store.schema import accounts
from tests.ca.conftest import certificates_of
from tests.ca.test_authority import csr_for, holder
from tests.ca.test_certificate_content import NAMES, linted

CLOUD_SIGNATURE = "cloud-signature-corporate"
# The rule account names followed before certificates carried them as a PrintableString.
EARLIER_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$")


def made_earlier(service, monkeypatch, username: str, **fields):
    """An account made as the version of the earlier rule made it (its packages, OTP seed and seal
    key bound to the name as it is); returns it and its OTP seed."""
    fields.setdefault("emails", (f"{re.sub('[^a-z0-9]', '.', username)}@example.mo",))
    with monkeypatch.context() as earlier:
        earlier.setattr(manager, "USERNAME", EARLIER_RULE)
        return holder(service, username=username, **fields)


def serial_number_of(certificate: x509.Certificate) -> str:
    return certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value


@pytest.mark.parametrize("username", ["ho_ka.2019", "kuan@dsaj.gov.mo"])
def test_an_account_named_under_the_earlier_rule_gets_its_first_certificate(ca_service, monkeypatch, username):
    made_earlier(ca_service, monkeypatch, username, **NAMES)  # a natural person's certificate, for the linters
    issued = ca_service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, username), "ra:test")
    assert issued.account == username
    assert serial_number_of(issued.certificate) == username.replace("_", ":").replace("@", "/")
    assert linted(issued.certificate) == []
    assert [c.serial for c in certificates_of(ca_service, username)] == [issued.serial]


def test_an_account_named_under_the_earlier_rule_gets_a_certificate_from_a_csr(ca_service, monkeypatch):
    created, _ = made_earlier(ca_service, monkeypatch, "leong_s@ipim")
    csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    issued = ca_service.ca.issue(CertificateRequest("standard-corporate", "leong_s@ipim", csr), "ra:test")
    assert serial_number_of(issued.certificate) == "leong:s/ipim"


def test_an_account_named_under_the_earlier_rule_renews_its_certificate(ca_service, monkeypatch):
    """The successor names the holder as its predecessor does: no AC-AB-0015 while it is valid."""
    made_earlier(ca_service, monkeypatch, "chan_tm@gov.mo")
    first = ca_service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, "chan_tm@gov.mo"), "ra:test")
    second = ca_service.ca.renew(first.serial, "ra:test")
    assert second.predecessor_serial == first.serial and second.account == "chan_tm@gov.mo"
    assert second.certificate.subject == first.certificate.subject
    assert serial_number_of(second.certificate) == "chan:tm/gov.mo"


def test_a_changed_subject_of_an_earlier_name_still_needs_the_predecessor_revoked(ca_service, monkeypatch):
    made_earlier(ca_service, monkeypatch, "lei_ma@gov.mo")
    first = ca_service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, "lei_ma@gov.mo"), "ra:test")
    with ca_service.database.transaction() as conn:
        conn.execute(update(accounts).where(accounts.c.username == "lei_ma@gov.mo").values(title="Chefe"))
    with pytest.raises(CertificateRefused) as refused:
        ca_service.ca.renew(first.serial, "ra:test")
    assert refused.value.help_code == "AC-AB-0015"


def test_earlier_names_and_current_names_never_share_a_serial_number(ca_service, monkeypatch):
    made_earlier(ca_service, monkeypatch, "wong_k@mo")
    holder(ca_service, username="wong-k-mo")
    earlier = ca_service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, "wong_k@mo"), "ra:test")
    current = ca_service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, "wong-k-mo"), "ra:test")
    assert serial_number_of(earlier.certificate) != serial_number_of(current.certificate)
    assert serial_number_of(current.certificate) == "wong-k-mo"


def test_new_accounts_still_follow_the_current_rule(ca_service):
    with pytest.raises(InvalidArgument, match="account name") as refused:
        holder(ca_service, username="new_holder@mo")
    assert refused.value.field == "account"
