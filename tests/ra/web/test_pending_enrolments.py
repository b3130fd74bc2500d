"""An enrolment whose RA process ended once the core had made the account (tests/ra/
test_enrol_interrupted.py), seen on a running `signserver ra serve`'s pages: the enrolment sent
again is refused saying it is pending, and the dashboard lists it with what to do when the
holder's OTP key and recovery code were never shown."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from signserver.clock import SystemClock
from signserver.ra.operations import Enrolment, RaOperations
from signserver.ra.store import repository
from tests.ca.test_certificate_service import client_pair
from tests.ra.conftest import KUAN
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.test_enrol_interrupted import EndsOnceTheAccountIsMade, ProcessEnded
from tests.ra.test_operations import SECRETS
from tests.ra.web.test_operator_pages import (HOLDER_PASSWORD, PHRASE, database, operator, operators,  # noqa: F401
                                              settings, submission_of, text_of)


@pytest.fixture
def ended_enrolment(served, ca_service, database) -> str:
    """An account the core made for an enrolment of the served RA whose process then ended."""
    account = f"web-ended-{secrets.token_hex(3)}"
    _, certificate, key = client_pair(ca_service, "client-ra", f"ra-{account}")
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with EndsOnceTheAccountIsMade(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                                  client_key=key, timeout_seconds=60) as client:
        with pytest.raises(ProcessEnded):
            RaOperations(database, SystemClock(), client).enrol(Enrolment(
                holder=replace(KUAN, account=account), profile="cloud-signature-government", kind="government",
                organisation="DSAJ", key_algorithm="ec-p256"), SECRETS, "counter-before")
    return account


def test_an_ended_enrolment_is_refused_as_pending_and_listed_with_what_to_do(ra_process, operator, database,
                                                                            ended_enrolment):
    page, _ = operator
    account = ended_enrolment
    with database.transaction() as conn:
        reference = repository.find_pending_enrolment(conn, account)["reference"]
    again = page.post("/operator/enrol", {
        "submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
        "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
        "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
        "organisation": "DSAJ", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD,
        "revocation_phrase": PHRASE, "revocation_phrase_confirmation": PHRASE}, files={"csr": ("", b"")})
    said = text_of(again)
    # Said in the operator's language, pointing at the dashboard's list, which names the reference
    # and the commands.
    assert again.status_code == 409 and "enrolment is pending" in said and "Enrolments not finished" in said, said

    dashboard = text_of(page.get("/operator"))
    assert "Enrolments not finished" in dashboard
    assert account in dashboard and reference in dashboard and "counter-before" in dashboard
    assert "signserver account reset-otp ACCOUNT" in dashboard
