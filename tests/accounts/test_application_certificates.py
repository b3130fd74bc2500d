"""Each client certificate names one application: registering it for a second one is refused,
saying which application has it (the database's unique index said "UNIQUE constraint failed")."""

from __future__ import annotations

import pytest

from signserver.errors import AlreadyExists

FINGERPRINT = "ab" * 32


def test_a_certificate_of_another_application_is_refused_naming_it(fresh_service):
    applications = fresh_service.applications
    applications.create("first-portal", client_certificate_sha256=FINGERPRINT, with_api_key=False)
    with pytest.raises(AlreadyExists, match="application 'first-portal' already uses this client certificate"):
        applications.create("second-portal", client_certificate_sha256=FINGERPRINT.upper(), with_api_key=False)
    applications.create("second-portal", otp_required=False)
    with pytest.raises(AlreadyExists, match="'first-portal' already uses"):
        applications.set_client_certificate("second-portal", FINGERPRINT)
    # The application that has it may register it again.
    assert applications.set_client_certificate("first-portal", FINGERPRINT).name == "first-portal"
