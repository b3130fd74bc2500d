"""A CA, a holder with a cloud-signature certificate, and an application, for PAdES tests."""

from __future__ import annotations


import pytest

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.clock import SystemClock
from tests.conftest import enrol, service_with_ca


@pytest.fixture(scope="module")
def pades_world(config, tmp_path_factory):
    """Real time here: pdfsig and OpenSSL check certificates against the real clock."""
    service = service_with_ca(config, tmp_path_factory.mktemp("pades") / "signserver.db", SystemClock())
    created, seed = enrol(service, holder_name="翁心 Weng Sam LUZIA KUAN", kind=AccountKind.CORPORATE,
                          organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    app, _ = service.applications.create("pdf-app", otp_required=False)
    return service, app, created, seed


