"""What the operator's commands change is appended to the audit log: an application registered
(`app create`), a key generated or deleted on the token (`hsm keygen`, `hsm delete`), a
certificate stored beside a key (`hsm import-cert`). A change to the token is recorded once made;
one whose record cannot be appended is told loudly and exits 1; one whose database cannot be opened
is refused before the token changes."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from signserver.errors import KeyNotFound
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.store.schema import audit_log
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, free_port
from tests.refused_writes import writes_refused


def _run(state_dir, *args: str, **extra_env: str):
    return cli_forkserver.run([str(SIGNSERVER), *args], env=cli_env(state_dir, **extra_env), capture_output=True,
                              text=True, timeout=120)


def _records(service, subject: str) -> list[tuple[str, str, dict]]:
    with service.database.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.subject == subject).order_by(audit_log.c.seq)).all()
    return [(r.event, r.actor, json.loads(r.detail)) for r in rows]


def test_an_application_registered_without_an_otp_is_recorded(state_dir, service):
    name = f"app-{uuid.uuid4().hex[:6]}"
    made = _run(state_dir, "app", "create", name, "--no-otp", "--json")
    assert made.returncode == 0, made.stderr
    api_key = json.loads(made.stdout)["api_key"]
    [(event, actor, detail)] = _records(service, name)
    assert (event, actor) == ("application.created", "operator:cli")
    assert detail == {"otp_required": False, "accounts": "all", "client_certificate_sha256": None, "api_key": True,
                      "two_step_only": False}
    assert api_key not in json.dumps(detail)


def test_a_key_generated_and_deleted_is_recorded(state_dir, service):
    label = f"recorded-{uuid.uuid4().hex[:6]}"
    made = _run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", label, "--json")
    assert made.returncode == 0, made.stderr
    key_id = json.loads(made.stdout)["key_id"]
    gone = _run(state_dir, "hsm", "delete", label, "--yes")
    assert gone.returncode == 0, gone.stderr
    detail = {"key_id": key_id, "algorithm": "ec-p256", "bits": 256, "token": service.keys.session.token_label}
    assert _records(service, label) == [("hsm.key_generated", "operator:cli", detail),
                                        ("hsm.key_deleted", "operator:cli", detail)]


def test_a_certificate_stored_beside_a_key_is_recorded(state_dir, service, tmp_path):
    label = f"certified-{uuid.uuid4().hex[:6]}"
    key = service.generate_key(KeyAlgorithm.EC_P256, label)
    issuer = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")]))
                   .public_key(service.keys.public_key(key.key_id)).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(issuer, hashes.SHA256()))
    path = tmp_path / "certificate.pem"
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    stored = _run(state_dir, "hsm", "import-cert", label, str(path))
    assert stored.returncode == 0, stored.stderr
    assert _records(service, label) == [("hsm.certificate_stored", "operator:cli", {
        "token": service.keys.session.token_label, "key_id": key.key_id, "serial": format(certificate.serial_number, "x"), "certificate_subject": f"CN={label}",
        "sha256": certificate.fingerprint(hashes.SHA256()).hex()})]


@pytest.mark.sqlite_only  # the trigger goes on the state directory's database, the command's on SQLite
def test_a_key_whose_record_cannot_be_appended_is_told_and_exits_1(state_dir, service):
    label = f"unrecorded-{uuid.uuid4().hex[:6]}"
    with writes_refused(service.database, "INSERT", "audit_log"):
        made = _run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", label, "--json")
    assert made.returncode == 1, made.stdout + made.stderr
    assert "WARNING" in made.stderr and f"key {label!r}" in made.stderr and "hsm.key_generated" in made.stderr
    assert json.loads(made.stdout)["label"] == label  # what it made is still printed
    service.keys.session.close()  # see the token as it is now
    assert service.find_key(label).label == label  # the key stays: the token's change cannot be taken back
    assert _records(service, label) == []


def test_a_key_is_not_generated_when_the_database_cannot_be_opened(state_dir, service):
    label = f"unaudited-{uuid.uuid4().hex[:6]}"
    # Token administration where no database answers.
    unreachable = f"postgresql+psycopg://signserver@127.0.0.1:{free_port()}/signserver"
    made = _run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", label,
                SIGNSERVER_DATABASE_URL=unreachable)
    assert made.returncode != 0 and "nothing was changed on the token" in made.stderr, made.stderr
    service.keys.session.close()
    with pytest.raises(KeyNotFound):
        service.find_key(label)
