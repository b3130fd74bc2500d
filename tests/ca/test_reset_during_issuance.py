"""A new key is sealed to the holder's seal key as it stands when the key is made. An operator's
password reset (a new seal key, the old packages' credentials disabled) that commits while a
certificate's key is being made must not leave behind an active credential sealed to the seal
key the reset replaced: nobody could ever open it, yet its certificate would be valid. The
issuance is refused, nothing of it kept, and made again it seals to the new seal key."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest, HolderActivation
from signserver.errors import CertificateRefused
from signserver.secret import Secret
from signserver.store.schema import certificates, credentials
from tests.conftest import PASSWORD, enrol, service_with_ca
from tests.signing.holders import CLOUD_SIGNATURE, assert_signed_by, authorize_and_sign, digests, no_otp_application

OPERATOR = "ra:test"
RESET_PASSWORD = "Reset-by-operator-2026"


@pytest.fixture
def service(config, tmp_path, clock):
    return service_with_ca(config, tmp_path / "signserver.db", clock)


def reset_while_the_key_is_made(service, username: str) -> None:
    """The next package made for ``username`` is made, then the operator's reset commits, then
    the issuance goes on with that package."""
    make = service.packages.make

    def made_then_reset(*args, **kwargs):
        del service.packages.make  # once
        package = make(*args, **kwargs)
        service.accounts.reset_password(username, Secret(RESET_PASSWORD), OPERATOR)
        return package
    service.packages.make = made_then_reset


def live_records(service, account_username: str) -> tuple[list, list]:
    """The account's active credentials and its certificates."""
    account = service.accounts.get(account_username)
    with service.database.read() as conn:
        active = conn.execute(select(credentials.c.id).where(
            credentials.c.account_id == account.id, credentials.c.status == "active")).scalars().all()
        issued = conn.execute(select(certificates.c.serial).where(
            certificates.c.account_id == account.id)).scalars().all()
    return list(active), list(issued)


def key_id_of(service, credential_id: str) -> str:
    with service.database.read() as conn:
        return conn.execute(select(credentials.c.key_id).where(credentials.c.id == credential_id)).scalar()


def test_a_renewal_whose_key_was_sealed_before_a_reset_is_refused_and_keeps_nothing(service, clock):
    created, _ = enrol(service, f"race{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda", revocation_phrase=Secret("OldPhrase2017"))
    name = created.account.username
    first = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    before = live_records(service, name)

    reset_while_the_key_is_made(service, name)
    with pytest.raises(CertificateRefused, match="seal key of .* changed while its new key was made"):
        service.ca.renew(first.serial, OPERATOR, activation=HolderActivation(
            holder_password=Secret(PASSWORD), revocation_phrase=Secret("NewPhrase2026")))

    active, issued = live_records(service, name)
    assert issued == before[1]  # no certificate for a key nobody can open
    assert active == []  # the reset disabled the old package's credential, and no new one came


def test_an_issuance_whose_key_was_sealed_before_a_reset_is_refused_and_made_again_signs(service, clock):
    created, _ = enrol(service, f"race{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda")
    name = created.account.username
    first = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    service.ca.revoke(first.serial, "keyCompromise", OPERATOR)

    reset_while_the_key_is_made(service, name)
    with pytest.raises(CertificateRefused, match="seal key of .* changed while its new key was made"):
        service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    active, issued = live_records(service, name)
    assert active == [] and issued == [first.serial]

    # Made again, the new key is sealed to the seal key of the password the reset set.
    again = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    wanted = digests("signed after the reset")
    signatures = authorize_and_sign(service, no_otp_application(service), name, again.credential_id, wanted,
                                    RESET_PASSWORD)
    assert_signed_by(service.packages.public_key_der(key_id_of(service, again.credential_id)), signatures, wanted)
