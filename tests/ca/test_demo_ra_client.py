"""`make run` (serve --demo) gives the RA it starts beside the server the client certificates the
RA reads by default, so that the RA reaches the core without a step by hand."""

from __future__ import annotations

from signserver.accounts.applications import certificate_fingerprint
from signserver.ca.client_status import presented
from signserver.demo import ensure_ra_clients
from signserver.ra.settings import RaSettings


def test_the_demo_issues_the_ra_its_default_client_certificates(ca_service, tmp_path):
    service = ca_service
    settings = RaSettings(state_dir=tmp_path)
    certificate, key, roots = settings.client_files
    application_certificate, application_key = settings.application_client_files

    ensure_ra_clients(service, tmp_path / "clients")

    for private in (key, application_key):
        assert private.stat().st_mode & 0o077 == 0
    assert b"BEGIN CERTIFICATE" in roots.read_bytes()
    ra = presented(certificate.read_bytes())
    assert service.ca.client_status.issued_profile(ra) == "client-ra"
    assert service.ca.ra_requests.identify(certificate.read_bytes())  # the core takes it for an RA
    application = presented(application_certificate.read_bytes())
    assert service.ca.client_status.issued_profile(application) == "client-asp"
    assert service.applications.authenticate(
        api_key=None, certificate_sha256=certificate_fingerprint(application.certificate)).name == "ra-application"

    made = certificate.read_bytes(), application_certificate.read_bytes()
    ensure_ra_clients(service, tmp_path / "clients")
    # Kept once made: the RA's files do not change under it.
    assert (certificate.read_bytes(), application_certificate.read_bytes()) == made
