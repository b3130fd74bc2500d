"""An enrolment whose RA process ends (killed outright, the power lost) once the core has made the
holder's account and before its OTP key and recovery code were shown: the account is in the core,
the enrolment pending in the RA without a secret. Sent again, the enrolment is refused with the way
to give the holder a new OTP key and recovery code and to finish it; done so, the holder signs in.

The process's end is the moment the core's answer reaches the RA: a real CertificateClient to the
real served core whose create_account ends the run there (a BaseException, which nothing of the
RA catches), as SIGKILL would; the RA's real database keeps what it had recorded before."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from signserver.accounts import otp
from signserver.client import CertificateClient
from signserver.ra.errors import OperationRefused
from signserver.ra.operations import RaOperations
from signserver.ra.store import repository
from signserver.secret import Secret
from tests.ca.test_certificate_service import client_pair
from tests.ra.test_operations import OPERATOR, PASSWORD, SECRETS, cloud, core, operations, trail  # noqa: F401


class ProcessEnded(BaseException):
    """The RA process ended: nothing after this point runs."""


class EndsOnceTheAccountIsMade(CertificateClient):
    def create_account(self, request, *, evidence=None):
        super().create_account(request, evidence=evidence)  # the core made it; its answer is lost with the process
        raise ProcessEnded


@pytest.fixture
def ended(served, ca_service, ca_clock, ra_database):
    """RaOperations whose process ends once the core has made an account."""
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-ended-tests")
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with EndsOnceTheAccountIsMade(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                                  client_key=key, timeout_seconds=60, clock=ca_clock) as client:
        yield RaOperations(ra_database, ca_clock, client)


def test_an_enrolment_ended_after_the_core_made_the_account_says_how_to_recover(ended, operations, ra_database,
                                                                                ca_service, ca_clock, core):
    account = "op-ended"
    with pytest.raises(ProcessEnded):
        ended.enrol(cloud(account), SECRETS, OPERATOR)
    assert ca_service.accounts.get(account).username == account
    with ra_database.transaction() as conn:
        pending = repository.find_pending_enrolment(conn, account)
        assert repository.find_holder(conn, account) is None
    assert pending is not None and PASSWORD not in str(pending)

    # The RA started again; the operator sends the enrolment again.
    with pytest.raises(OperationRefused) as refused:
        operations.enrol(cloud(account), SECRETS, OPERATOR)
    said = str(refused.value)
    assert pending["reference"] in said and "--existing-account" in said
    # The secrets the core gave are lost with the process: the sentence says how to make them anew.
    assert f"signserver account reset-otp {account}" in said and "recovery code" in said, said
    assert f"signserver account reset-password {account}" in said
    assert refused.value.reason == "enrolment_pending"

    # Done as it says: an HSM administrator's new OTP key and recovery code, then the enrolment finished.
    seed = parse_qs(urlparse(ca_service.accounts.reset_otp(account, "operator:test")).query)["secret"][0]
    recovery_code = ca_service.accounts.reset_password(account, Secret("Second-pass-2"), "operator:test")
    enrolled = operations.enrol(cloud(account, existing_account=True), SECRETS, OPERATOR)
    assert enrolled.certificate is not None and enrolled.certificate.account == account
    with ra_database.transaction() as conn:
        assert repository.find_pending_enrolment(conn, account) is None
    assert core.authenticate_holder(account, "Second-pass-2", otp.code_at(seed, ca_clock.now())).account == account
    assert ca_service.accounts.unlock_with_recovery_code(account, Secret(recovery_code), Secret("Third-pass-3"),
                                                         "operator:test")
    assert not any(s in e["detail"] for e in trail(ra_database) for s in (PASSWORD, seed, recovery_code))
