"""A holder's first certificate is made for the key made at enrolment. An operator's password
reset that commits while that certificate is made (a new seal key, the enrolment key's credential
disabled) must not leave a valid certificate recorded for a credential nobody can open: the
issuance is refused, nothing of it kept, and made again it gets a new key, sealed to the new seal
key, which signs."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.errors import CertificateRefused
from signserver.secret import Secret
from signserver.store.schema import certificates
from tests.ca.test_reset_during_issuance import (OPERATOR, RESET_PASSWORD, key_id_of, live_records,  # noqa: F401
                                                 service)
from tests.conftest import enrol
from tests.signing.holders import CLOUD_SIGNATURE, assert_signed_by, authorize_and_sign, digests, no_otp_application


def reset_once_the_enrolment_key_is_read(service, username: str) -> None:
    """The enrolment key's public key is read for its first certificate, then the operator's reset
    commits, then the issuance goes on."""
    public_key_der = service.packages.public_key_der

    def read_then_reset(key_id):
        del service.packages.public_key_der  # once
        found = public_key_der(key_id)
        service.accounts.reset_password(username, Secret(RESET_PASSWORD), OPERATOR)
        return found
    service.packages.public_key_der = read_then_reset


def test_a_first_certificate_for_the_enrolment_key_that_races_a_reset_is_refused_and_made_again_signs(service):
    created, _ = enrol(service, f"race{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda")
    name = created.account.username

    reset_once_the_enrolment_key_is_read(service, name)
    with pytest.raises(CertificateRefused, match="nothing was issued"):
        service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)

    active, issued = live_records(service, name)
    assert issued == [] and active == []
    with service.database.read() as conn:
        assert conn.execute(select(certificates.c.serial)
                            .where(certificates.c.credential_id == created.credential.id)).first() is None

    again = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    assert again.credential_id != created.credential.id
    wanted = digests("after the reset")
    signatures = authorize_and_sign(service, no_otp_application(service), name, again.credential_id, wanted,
                                    RESET_PASSWORD)
    assert_signed_by(service.packages.public_key_der(key_id_of(service, again.credential_id)), signatures, wanted)
