"""`signserver ra serve` as its own process, end to end: a real served core (mutual TLS with an RA
client certificate), the reference registry and an SMTP server on loopback (codes and notices read
from the e-mails), the holder's steps over the JSON API, the operator's over `signserver ra`
commands: a cloud-signature renewal to its new certificate, and a qualified one to the in-person
queue and its completion."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from signserver.ra.server import SHUTDOWN_GRACE_SECONDS
from tests import cli_forkserver
from tests.conftest import empty_database_url, LOOPBACK_TLS
from tests.ra.conftest import KUAN
from tests.ra.running import (PASSWORD, SIGNSERVER, application_document, bound_port, card_csr, confirm, enrol, get, post,
                              ra_command, register, sign_application, start_ra, stop, verify_identity,
                              wait_until_answering)
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)


def test_a_cloud_signature_renewal_end_to_end(ra_process, inbox, core, ca_service, ca_clock):
    issued = enrol(core, "ra-e2e-cloud", "cloud-signature-government")
    register(ra_process, "ra-e2e-cloud")
    confirmed = confirm(ra_process, inbox, issued.serial)
    assert confirmed["serial"] == issued.serial and confirmed["confirmed_by"] == "dsaj-operator"
    renewal_id = confirmed["id"]
    anonymous = httpx.get(f"{ra_process.base}/renewals/{renewal_id}", timeout=30, verify=LOOPBACK_TLS)
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
    response = httpx.request(method, ra_process.base + path, content=body, timeout=30, verify=LOOPBACK_TLS)
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
    result = cli_forkserver.run([str(SIGNSERVER), "--config", str(config), "ra", "renewals"], env=env, cwd=tmp_path,
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
    # As if the activation had begun longer ago than one can run (about a minute with these
    # settings): the next RA's resume pass takes it at once instead of after that wait.
    engine = create_engine(first.database)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ra_renewals SET updated_at = updated_at - 3600 "
                          "WHERE id = :id AND state = 'activating'"), {"id": renewal_id})
    engine.dispose()

    second = start_ra(folder, served, ra_files, registry, inbox, database=first.database)  # the same database
    try:
        deadline = time.monotonic() + 120
        while (shown := get(second, f"/renewals/{renewal_id}").json())["state"] == "activating":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        if shown["state"] == "awaiting_activation":  # stopped before the core renewed: the holder activates again
            assert "interrupted" in shown["refusal"] or "failed" in shown["refusal"]
            assert shown["refusal_reason"] in ("interrupted", "failed")
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
    command, env = serve_command(tmp_path, f'listen = "{listen}:0"')
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "ra.listen" in result.stderr and "ra.tls_cert" in result.stderr


def start_over_tls(folder: Path) -> tuple[subprocess.Popen, str, ssl.SSLContext]:
    """`signserver ra serve` over TLS with a self-signed certificate on a port it binds itself,
    once it answers: the process, its https address and a context that trusts it."""
    certificate, key = self_signed(folder)
    trusted = ssl.create_default_context(cafile=str(certificate))
    command, env = serve_command(folder, f'listen = "127.0.0.1:0"\ntls_cert = "{certificate}"\ntls_key = "{key}"')
    log = folder / "ra.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
    process.log = log
    address = f"https://127.0.0.1:{bound_port(process, log)}"
    wait_until_answering(process, address, trusted, log)
    return process, address, trusted


def test_the_api_is_served_over_tls(tmp_path):
    process, address, trusted = start_over_tls(tmp_path)
    try:
        answer = httpx.get(f"{address}/healthz", verify=trusted, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):  # no plain HTTP beside it
            httpx.get(address.replace("https:", "http:") + "/healthz", timeout=5, verify=LOOPBACK_TLS)
        assert "https://127.0.0.1" in process.log.read_text()
    finally:
        stop(process)


def test_a_client_that_keeps_its_connection_does_not_hold_the_stop(tmp_path):
    process, address, trusted = start_over_tls(tmp_path)
    try:
        with httpx.Client(verify=trusted, timeout=10) as idle:  # keeps its connection and reads no more
            assert idle.get(f"{address}/healthz").status_code == 200
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            stopped_after = time.monotonic() - began
    finally:
        if process.poll() is None:
            stop(process)
    # Within the stop's grace (signserver/ra/server.py), with a margin for a loaded machine:
    # unbounded, it waited for asyncio's 30 s TLS shutdown timeout.
    assert process.returncode in (0, -signal.SIGTERM) and stopped_after < SHUTDOWN_GRACE_SECONDS + 12, \
        (stopped_after, process.log.read_text())


def test_an_unusable_tls_key_is_a_settings_error(tmp_path):
    certificate, _ = self_signed(tmp_path)
    (tmp_path / "broken-key.pem").write_text("not a key", encoding="utf-8")
    command, env = serve_command(tmp_path, f'listen = "127.0.0.1:0"\ntls_cert = "{certificate}"\n'
                                           f'tls_key = "{tmp_path / "broken-key.pem"}"')
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "ra.tls_key" in result.stderr


def test_an_address_in_use_is_a_settings_error_said_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command, env = serve_command(tmp_path, f'listen = "127.0.0.1:{port}"')
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "ra.listen" in result.stderr and "in use" in result.stderr and "Traceback" not in result.stderr
    assert "listening on" not in result.stdout  # never said before it was so


def test_a_listen_on_port_0_serves_on_a_free_port_and_says_which(tmp_path):
    command, env = serve_command(tmp_path, 'listen = "127.0.0.1:0"')
    log = tmp_path / "ra.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    try:
        port = bound_port(process, log)
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        assert f"pages at http://localhost:{port}/" in log.read_text()  # public_url unset: the address bound
    finally:
        stop(process)
