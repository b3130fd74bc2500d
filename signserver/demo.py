"""The demonstration set-up of the embedded defaults: a holder, a certificate, an application.

`signserver serve --demo` (what `make run` starts) creates them on the first start and prints the
holder's OTP QR code; `make demo` then signs examples/sample.pdf through the server. The demo
holder's password and OTP seed are kept in STATE_DIR/demo (mode 0600) so the demonstration can
run unattended: this is a development set-up, not how real holders are enrolled.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from signserver.accounts import otp
from signserver.accounts.applications import certificate_fingerprint
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.errors import NotFound
from signserver.files import write_private, write_private_key
from signserver.secret import Secret
from signserver.service import SignService

log = logging.getLogger(__name__)

DEMO_ACCOUNT = "demo.holder"
DEMO_APPLICATION = "demo-portal"
# The names whose files signserver.ra.settings reads by default.
DEMO_RA = "ra"
DEMO_RA_APPLICATION = "ra-application"


def ensure_demo(service: SignService, state_dir: Path) -> None:
    """Create the demo holder, certificate and application, and the RA's client certificates, once.

    Raises: HsmError, StoreUnavailable.
    """
    ensure_ra_clients(service, state_dir / "clients")
    folder = state_dir / "demo"
    try:
        service.accounts.get(DEMO_ACCOUNT)
        return
    except NotFound:
        pass
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = f"Demo-{secrets.token_urlsafe(12)}"
    created = service.accounts.create(
        Enrolment(DEMO_ACCOUNT, "翁心 Weng Sam LUZIA KUAN", ("demo.holder@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Demo Lda"), Secret(password), operator="server:demo")
    issued = service.ca.issue(CertificateRequest("cloud-signature-corporate", DEMO_ACCOUNT), "server:demo")
    key = ec.generate_private_key(ec.SECP256R1())
    client = service.ca.issue_service_certificate("client-asp", DEMO_APPLICATION, key.public_key(), "server:demo")
    service.applications.set_client_certificate(DEMO_APPLICATION, certificate_fingerprint(client.certificate))
    write_private_key(folder / "portal-key.pem", key)
    (folder / "portal.pem").write_bytes(client.certificate.public_bytes(Encoding.PEM))
    (folder / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()))
    write_private(folder / "password", f"{password}\n".encode())
    write_private(folder / "otp-seed", f"{parse_qs(urlparse(created.otp_uri).query)['secret'][0]}\n".encode())
    (folder / "credential").write_text(issued.credential_id + "\n")
    print(f"\nDemo holder {DEMO_ACCOUNT!r} (certificate {issued.serial}); scan for its OTP:\n")
    print(otp.qr_terminal(created.otp_uri))
    print(created.otp_uri)
    print(f"\nIts password, OTP seed and the {DEMO_APPLICATION!r} client certificate are in {folder}.\n", flush=True)


def ensure_ra_clients(service: SignService, folder: Path) -> None:
    """The client certificates `signserver ra serve` presents to the core by default, so that the
    RA `make run` starts beside the server reaches it: ``ra`` (its RA certificate, as
    `signserver ca issue-client --role ra ra` makes) and ``ra-application`` (the application
    through which holders sign their renewal applications, as `--role asp ra-application`
    makes). Each is kept once made. Raises: HsmError, StoreUnavailable."""
    for role, name in (("ra", DEMO_RA), ("asp", DEMO_RA_APPLICATION)):
        certificate, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
        if certificate.exists() and key.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = ec.generate_private_key(ec.SECP256R1())
        issued = service.ca.issue_service_certificate(f"client-{role}", name, private.public_key(), "server:demo")
        if role == "asp":
            service.applications.set_client_certificate(name, certificate_fingerprint(issued.certificate))
        write_private_key(key, private)
        certificate.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
        (folder / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()))
        log.info("issued the %s client certificate %s for %r into %s", role.upper(), issued.serial, name, folder)
