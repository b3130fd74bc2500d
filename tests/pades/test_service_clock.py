"""Long-term signatures are made and verified at the service's time, not the machine's.

The CA issues its certificates and CRLs at the service's clock; the revocation data a B-LT
signature embeds, and the verdict on it, are checked at that same time. A service whose clock
reads years away from the machine's (nodes whose clocks differ, a simulation) still signs.
"""

from __future__ import annotations

import datetime
import io

import pytest

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol, service_with_ca

# Far enough ahead that every certificate the CA issues then (3 years) is not yet valid now.
AHEAD = datetime.timedelta(days=4 * 366)


@pytest.fixture(scope="module")
def world_ahead(config, tmp_path_factory):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + AHEAD)
    service = service_with_ca(config, tmp_path_factory.mktemp("ahead") / "signserver.db", clock)
    created, _ = enrol(service, kind=AccountKind.CORPORATE, organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    app, _ = service.applications.create("pdf-app", otp_required=False)
    return service, app, created


@pytest.mark.parametrize("level", [PadesLevel.B_LT, PadesLevel.B_LTA], ids=lambda level: level.value)
def test_a_long_term_signature_is_made_and_verified_at_the_services_time(world_ahead, level):
    service, app, created = world_ahead
    signed = io.BytesIO()
    service.pades.sign_pdf(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                           io.BytesIO(sample_pdf(1)), signed, level, StampOptions())
    (report,) = service.pades.verify_pdf(io.BytesIO(signed.getvalue())).signatures
    assert report.intact and report.valid and report.trusted, report.summary
    assert report.level == level.value
