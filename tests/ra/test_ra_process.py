"""`signserver ra serve` as its own process, end to end: a real served core (mutual TLS with an RA
client certificate), the reference registry and an SMTP server on loopback (codes and notices read
from the e-mails), the holder's steps over the JSON API, the operator's over `signserver ra`
commands: a cloud-signature renewal to its new certificate, and a qualified one to the in-person
queue and its completion."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.client import CertificateClient, NewAccount
from tests.ca.test_certificate_service import client_pair
from tests import conftest
from tests.conftest import empty_database_url, free_port
from tests.ra.conftest import KUAN, photo
from tests.ra.test_application import ExternalEid, otp_now

SIGNSERVER = Path(sys.executable).parent / "signserver"
PASSWORD = "Current-pass-1"


class Inbox(conftest.Inbox):
    """The SMTP server's inbox, waited on for a message."""

    def wait_for(self, recipient: str, subject_part: str, after: int = 0, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages[after:]:
                if message["To"] == recipient and subject_part in message["Subject"]:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no e-mail '{subject_part}' to {recipient}")


@pytest.fixture(scope="module")
def inbox():
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture(scope="module")
def eid(ca_clock):
    """The external eID the qualified certificate's holder signs the application with."""
    return ExternalEid(ca_clock.now())


@pytest.fixture(scope="module")
def ra_files(served, ca_service, tmp_path_factory, eid):
    folder = tmp_path_factory.mktemp("ra-tls")
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-process-tests")
    (folder / "ra.pem").write_bytes(certificate)
    (folder / "ra-key.pem").write_bytes(key)
    # The RA is also an application of the core: the holder signs the application through it.
    issued, certificate, key = client_pair(ca_service, "client-asp", "ra-application-process")
    ca_service.applications.set_client_certificate(
        "ra-application-process", hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest())
    (folder / "ra-application.pem").write_bytes(certificate)
    (folder / "ra-application-key.pem").write_bytes(key)
    eid.root_file(folder).rename(folder / "eid-root.pem")
    (folder / "roots.pem").write_bytes(served.config.tls.cert_file.read_bytes()
                                       + served.config.tls.client_ca_file.read_bytes())
    return folder


@pytest.fixture(scope="module")
def core(served, ra_files, ca_clock):
    with CertificateClient(f"localhost:{served.port}", root_certificates=(ra_files / "roots.pem").read_bytes(),
                           client_certificate=(ra_files / "ra.pem").read_bytes(),
                           client_key=(ra_files / "ra-key.pem").read_bytes(), timeout_seconds=60,
                           clock=ca_clock) as client:
        yield client


def start_ra(folder: Path, served, ra_files, registry, inbox, database: str = "") -> subprocess.Popen:
    """`signserver ra serve` on a free port, once it answers; its own database (``database``, else a
    new one for ``folder``)."""
    port = free_port()
    database = database or empty_database_url(folder / "ra.sqlite")
    config = folder / "signserver.toml"
    config.write_text(f"""
state_dir = "state"
[ra]
listen = "127.0.0.1:{port}"
database_url = "{database}"
core_address = "localhost:{served.port}"
client_cert = "{ra_files / 'ra.pem'}"
client_key = "{ra_files / 'ra-key.pem'}"
ca_roots = "{ra_files / 'roots.pem'}"
application_client_cert = "{ra_files / 'ra-application.pem'}"
application_client_key = "{ra_files / 'ra-application-key.pem'}"
application_trust_roots = ["{ra_files / 'eid-root.pem'}"]
smtp_host = "127.0.0.1"
smtp_port = {inbox.port}
smtp_sender = "ra@example.mo"
registry_url = "{registry.url}"
registry_timeout_seconds = 2
registry_attempts = 1
core_timeout_seconds = 10
face_threshold = 0.8
notice_days = 3650
background_seconds = 0.2
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    env["SIGNSERVER_RA_OPERATOR"] = "dsaj-operator"
    log = folder / f"ra-{port}.log"  # a file, not a pipe: nobody reads a pipe while the tests run
    with log.open("w") as output:
        process = subprocess.Popen([str(SIGNSERVER), "--config", str(config), "ra", "serve"], env=env, cwd=folder,
                                   stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the RA did not start: " + log.read_text())
        time.sleep(0.1)
    process.base, process.config, process.env, process.database = base, config, env, database
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


@pytest.fixture(scope="module")
def ra_process(served, ra_files, registry, inbox, tmp_path_factory):
    process = start_ra(tmp_path_factory.mktemp("ra-process"), served, ra_files, registry, inbox)
    yield process
    stop(process)


def ra_command(ra_process, *arguments: str) -> dict | list:
    result = subprocess.run([str(SIGNSERVER), "--config", str(ra_process.config), "ra", "--json", *arguments],
                            env=ra_process.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def register(ra_process, account: str) -> None:
    ra_command(ra_process, "holder", account, "--id-type", KUAN.id_type, "--id-number", KUAN.id_number,
               "--name", KUAN.name, "--birth-date", KUAN.birth_date.isoformat(),
               *[f"--email={address}" for address in KUAN.emails])


def enrol(core, account: str, profile: str):
    core.create_account(NewAccount(account=account, holder_name=KUAN.name, emails=KUAN.emails, password=PASSWORD,
                                   kind="government", organisation="DSAJ", department="Legal",
                                   revocation_phrase="OldPhrase2024"))
    csr = None if profile.startswith("cloud-signature") else card_csr()
    return core.issue_certificate(account, profile, csr=csr)


def card_csr() -> bytes:
    """A PKCS#10 request (DER) for a key made on the holder's card."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, KUAN.name)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


TOKENS: dict[str, str] = {}  # renewal id -> the holder token its notice e-mail carried
TOKEN_LINE = re.compile(r"Access key:\s*([A-Za-z0-9_\-]{20,})")  # the notice's holder token


def confirm(ra_process, inbox, serial: str) -> dict:
    """The operator confirms the renewal of ``serial``; the holder token of the notice that goes
    out at once is kept for the holder's calls (``post``, ``get``)."""
    seen = len(inbox.messages)
    confirmed = ra_command(ra_process, "confirm-renewal", serial)
    notice = inbox.wait_for(KUAN.emails[0], "Certificate renewal notice", seen).get_content()
    found = TOKEN_LINE.search(notice)
    assert found, notice
    TOKENS[confirmed["id"]] = found.group(1)
    return confirmed


def holder_headers(path: str) -> dict[str, str]:
    """``Authorization: Bearer`` with the holder token of the renewal ``path`` names, if known."""
    named = re.match(r"/renewals/(\w+)", path)
    token = TOKENS.get(named.group(1), "") if named else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def post(ra_process, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(ra_process.base + path, timeout=60, headers={**holder_headers(path), **(headers or {})},
                      **kwargs)


def get(ra_process, path: str, timeout: float = 30) -> httpx.Response:
    return httpx.get(ra_process.base + path, timeout=timeout, headers=holder_headers(path))


def verify_identity(ra_process, inbox, renewal_id: str) -> dict:
    base = f"/renewals/{renewal_id}"
    assert post(ra_process, base + "/consent").status_code == 200
    for address in KUAN.emails:
        seen = len(inbox.messages)
        assert post(ra_process, base + "/codes", json={"address": address}).json() == \
            {"sent": True, "already_verified": False}
        code = re.search(r"\b(\d{6})\b", inbox.wait_for(address, "Verification code", seen).get_content()).group(1)
        assert post(ra_process, base + "/codes/verify", json={"address": address, "code": code}).status_code == 200
    assert post(ra_process, base + "/registry").json()["steps"]["registry_match"] is True
    face = post(ra_process, base + "/face", content=photo("kuan-weng-sam.png"), headers={"Content-Type": "image/png"})
    assert face.status_code == 200 and face.json()["steps"]["face"] is True
    agreed = post(ra_process, base + "/agreement", json={"accepted": True})
    assert agreed.status_code == 200
    assert agreed.json()["state"] == "awaiting_application" and agreed.json()["pending_list"] == "identity"
    return agreed.json()


def application_document(ra_process, renewal_id: str) -> bytes:
    response = get(ra_process, f"/renewals/{renewal_id}/application", timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.content).hexdigest()
    return response.content


def sign_application(ra_process, renewal_id: str, account: str, ca_service, ca_clock) -> dict:
    """The holder signs the application with the cloud-signature credential (password and OTP)."""
    application_document(ra_process, renewal_id)
    signed = post(ra_process, f"/renewals/{renewal_id}/application/sign",
                  json={"password": PASSWORD, "otp": otp_now(ca_service, ca_clock, account)})
    assert signed.status_code == 200, signed.text
    return signed.json()


def test_a_cloud_signature_renewal_end_to_end(ra_process, inbox, core, ca_service, ca_clock):
    issued = enrol(core, "ra-e2e-cloud", "cloud-signature-government")
    register(ra_process, "ra-e2e-cloud")
    confirmed = confirm(ra_process, inbox, issued.serial)
    assert confirmed["serial"] == issued.serial and confirmed["confirmed_by"] == "dsaj-operator"
    renewal_id = confirmed["id"]
    anonymous = httpx.get(f"{ra_process.base}/renewals/{renewal_id}", timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")

    shown = get(ra_process, f"/renewals/{renewal_id}").json()
    assert shown["state"] == "awaiting_identity" and shown["pending_list"] == "identity"
    assert shown["unverified_emails"] == list(KUAN.emails)
    verify_identity(ra_process, inbox, renewal_id)
    signed = sign_application(ra_process, renewal_id, "ra-e2e-cloud", ca_service, ca_clock)
    assert signed["state"] == "awaiting_activation" and signed["pending_list"] == "activation"
    assert signed["steps"]["application"] and len(signed["application_sha256"]) == 64

    seen = len(inbox.messages)
    started = post(ra_process, f"/renewals/{renewal_id}/activation",
                   json={"password": PASSWORD, "revocation_phrase": "NewPhrase2027"})
    assert started.status_code == 202 and started.json()["state"] in ("activating", "activated")
    deadline = time.monotonic() + 120
    while (shown := get(ra_process, f"/renewals/{renewal_id}").json())["state"] == "activating":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert shown["state"] == "activated", shown
    [new] = [c for c in core.list_certificates("ra-e2e-cloud") if c.predecessor_serial == issued.serial]
    assert shown["new_serial"] == new.serial
    activated = inbox.wait_for(KUAN.emails[0], "Certificate activated", seen).get_content()
    assert issued.serial in activated and new.serial in activated
    trail = ra_command(ra_process, "audit", "--renewal", renewal_id)
    assert trail["chain_intact"] and "activated" in [e["action"] for e in trail["entries"]]


def test_a_qualified_renewal_to_the_in_person_queue_and_its_completion(ra_process, inbox, core, eid, tmp_path):
    issued = enrol(core, "ra-e2e-qualified", "qualified-government")
    register(ra_process, "ra-e2e-qualified")
    renewal_id = confirm(ra_process, inbox, issued.serial)["id"]
    verify_identity(ra_process, inbox, renewal_id)
    signed_pdf = eid.sign(application_document(ra_process, renewal_id))  # with the holder's own eID
    agreed = post(ra_process, f"/renewals/{renewal_id}/application/upload", content=signed_pdf,
                  headers={"Content-Type": "application/pdf"}).json()
    assert agreed["state"] == "awaiting_in_person" and agreed["help_code"] == "AC-AB-0007"
    assert agreed["application_sha256"] == hashlib.sha256(signed_pdf).hexdigest()
    kept = get(ra_process, f"/renewals/{renewal_id}/application/signed")
    assert kept.status_code == 200 and kept.content == signed_pdf
    assert set(agreed["guidance"]) == {"zh-Hant", "pt", "en"}
    refused = post(ra_process, f"/renewals/{renewal_id}/activation",
                   json={"password": PASSWORD, "revocation_phrase": "NewPhrase2027"})
    assert refused.status_code == 409 and refused.json()["help_code"] == "AC-AB-0007"
    assert renewal_id in [r["id"] for r in ra_command(ra_process, "in-person")]
    (tmp_path / "card.csr").write_bytes(card_csr())
    completed = ra_command(ra_process, "complete-in-person", renewal_id, "--csr", str(tmp_path / "card.csr"))
    assert completed["state"] == "completed_in_person"
    assert [c.serial for c in core.list_certificates("ra-e2e-qualified") if c.predecessor_serial == issued.serial] == \
        [completed["new_serial"]]
    assert renewal_id not in [r["id"] for r in ra_command(ra_process, "in-person")]
    assert [r["state"] for r in ra_command(ra_process, "renewals", "--account", "ra-e2e-qualified")] == \
        ["completed_in_person"]


@pytest.mark.parametrize("method, path, body", [
    ("get", "/renewals/nothing", None),
    ("post", "/renewals/nothing/consent", None),
    ("post", "/renewals/nothing/codes", b"[" * 60_000),
    ("post", "/renewals/nothing/face", b""),
])
def test_a_call_without_the_holder_token_is_refused_plainly(ra_process, method, path, body):
    response = httpx.request(method, ra_process.base + path, content=body, timeout=30)
    assert response.status_code == 401 and response.json()["error"] == "not_authorised"


def test_refusals_carry_their_reason(ra_process, inbox, core):
    issued = enrol(core, "ra-e2e-refusals", "cloud-signature-government")
    register(ra_process, "ra-e2e-refusals")
    renewal_id = confirm(ra_process, inbox, issued.serial)["id"]
    early = post(ra_process, f"/renewals/{renewal_id}/registry")
    assert early.status_code == 409 and "consent" in early.json()["message"]
    post(ra_process, f"/renewals/{renewal_id}/consent")
    post(ra_process, f"/renewals/{renewal_id}/registry")
    not_a_photo = post(ra_process, f"/renewals/{renewal_id}/face", content=b"GIF89a....",
                       headers={"Content-Type": "image/gif"})
    assert not_a_photo.status_code == 422 and not_a_photo.json()["error"] == "photo_refused"
    wrong = post(ra_process, f"/renewals/{renewal_id}/codes/verify", json={"address": KUAN.emails[0], "code": "123456"})
    assert wrong.status_code == 422 and wrong.json()["error"] == "code_refused"
    early_application = post(ra_process, f"/renewals/{renewal_id}/application/sign", json={"password": PASSWORD})
    assert early_application.status_code == 409 and early_application.json()["error"] == "step_refused"
    not_a_pdf = post(ra_process, f"/renewals/{renewal_id}/application/upload", content=b"%PDF",
                     headers={"Content-Type": "text/plain"})
    assert not_a_pdf.status_code == 400


def test_the_cli_names_a_bad_setting(tmp_path):
    config = tmp_path / "signserver.toml"
    config.write_text("[ra]\nface_threshold = 3\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    result = subprocess.run([str(SIGNSERVER), "--config", str(config), "ra", "renewals"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "ra.face_threshold" in result.stderr


def test_an_ra_killed_during_activation_resumes_without_a_second_certificate(served, ra_files, registry, inbox,
                                                                              core, tmp_path, ca_service, ca_clock):
    folder = tmp_path
    first = start_ra(folder, served, ra_files, registry, inbox)
    try:
        issued = enrol(core, "ra-e2e-killed", "cloud-signature-government")
        register(first, "ra-e2e-killed")
        renewal_id = confirm(first, inbox, issued.serial)["id"]
        verify_identity(first, inbox, renewal_id)
        sign_application(first, renewal_id, "ra-e2e-killed", ca_service, ca_clock)
        started = post(first, f"/renewals/{renewal_id}/activation",
                       json={"password": PASSWORD, "revocation_phrase": "NewPhrase2027"})
        assert started.status_code == 202
    finally:
        first.kill()  # at once: before, during or after the core's renewal, whichever it was
        first.wait(30)

    second = start_ra(folder, served, ra_files, registry, inbox, database=first.database)  # the same database
    try:
        deadline = time.monotonic() + 120
        while (shown := get(second, f"/renewals/{renewal_id}").json())["state"] == "activating":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        if shown["state"] == "awaiting_activation":  # stopped before the core renewed: the holder activates again
            assert "interrupted" in shown["refusal"] or "failed" in shown["refusal"]
            post(second, f"/renewals/{renewal_id}/activation",
                 json={"password": PASSWORD, "revocation_phrase": "NewPhrase2027"})
            while (shown := get(second, f"/renewals/{renewal_id}").json())["state"] == \
                    "activating":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        successors = [c for c in core.list_certificates("ra-e2e-killed") if c.predecessor_serial == issued.serial]
        assert shown["state"] == "activated" and [c.serial for c in successors] == [shown["new_serial"]]
    finally:
        stop(second)


# --- where the RA listens, and TLS for its API --------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ra.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    (folder / "api.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "api-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return folder / "api.pem", folder / "api-key.pem"


def serve_command(folder: Path, settings: str) -> tuple[list[str], dict]:
    """`signserver ra serve` with ``settings`` as its [ra] section (no core, registry or SMTP is
    reached before a holder or a notice needs one)."""
    config = folder / "signserver.toml"
    config.write_text(f'state_dir = "state"\n[ra]\ndatabase_url = "{empty_database_url(folder / "ra.sqlite")}"\n'
                      f"{settings}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    return [str(SIGNSERVER), "--config", str(config), "ra", "serve"], env


@pytest.mark.parametrize("listen", ["0.0.0.0", "[::]"])
def test_a_listen_beyond_loopback_without_tls_is_refused_at_start(tmp_path, listen):
    command, env = serve_command(tmp_path, f'listen = "{listen}:{free_port()}"')
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "ra.listen" in result.stderr and "ra.tls_cert" in result.stderr


def test_the_api_is_served_over_tls(tmp_path):
    certificate, key = self_signed(tmp_path)
    port = free_port()
    command, env = serve_command(tmp_path, f'listen = "127.0.0.1:{port}"\ntls_cert = "{certificate}"\n'
                                           f'tls_key = "{key}"')
    log = tmp_path / "ra.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    try:
        trusted = ssl.create_default_context(cafile=str(certificate))
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted, timeout=2)
                break
            except httpx.ConnectError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):  # no plain HTTP beside it
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert "https://127.0.0.1" in log.read_text()
    finally:
        stop(process)


def test_an_unusable_tls_key_is_a_settings_error(tmp_path):
    certificate, _ = self_signed(tmp_path)
    (tmp_path / "broken-key.pem").write_text("not a key", encoding="utf-8")
    command, env = serve_command(tmp_path, f'listen = "127.0.0.1:{free_port()}"\ntls_cert = "{certificate}"\n'
                                           f'tls_key = "{tmp_path / "broken-key.pem"}"')
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "ra.tls_key" in result.stderr
