"""`signserver ca recertify-issuing` as an operator runs it: the root signs the issuing CA a new
certificate for the same key and subject; under an external root, the command writes the request
and installs the certificate the root signed, once checked."""

from __future__ import annotations

import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, database_url

PEM = serialization.Encoding.PEM


def run(state_dir, db, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=180,
                              env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"), **env))


def issuing_of(state_dir, db) -> x509.Certificate:
    shown = run(state_dir, db, "ca", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    return x509.load_pem_x509_certificate(json.loads(shown.stdout)["issuing"].encode())


def test_the_root_signs_the_issuing_ca_a_new_certificate_and_the_command_says_so(state_dir, tmp_path):
    assert run(state_dir, tmp_path, "ca", "init").returncode == 0
    old = issuing_of(state_dir, tmp_path)
    done = run(state_dir, tmp_path, "ca", "recertify-issuing")
    assert done.returncode == 0, done.stderr
    new = issuing_of(state_dir, tmp_path)
    assert new.serial_number != old.serial_number and new.public_key() == old.public_key()
    assert f"serial {new.serial_number:x}" in done.stdout and f"serial {old.serial_number:x}" in done.stdout
    assert "new certificate" in done.stdout and "ca/issuing.crt" in done.stdout

    again = run(state_dir, tmp_path, "ca", "recertify-issuing", "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["previous_serial"] == format(new.serial_number, "x")
    assert x509.load_pem_x509_certificate(answer["certificate"].encode()) == issuing_of(state_dir, tmp_path)

    outside = run(state_dir, tmp_path, "ca", "recertify-issuing", "--issuing-cert", str(tmp_path / "none.pem"))
    assert outside.returncode == 1 and "cannot read" in outside.stderr


def _root():
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External Root")])
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(key, hashes.SHA384()))

    def sign(subject: x509.Name, public_key) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1825))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA384()))
    return root, sign


def test_under_an_external_root_the_command_asks_for_the_roots_certificate_and_checks_it(state_dir, tmp_path):
    begun = run(state_dir, tmp_path, "ca", "init", "--external-root", "--csr-out", str(tmp_path / "first.csr"))
    assert begun.returncode == 0, begun.stderr
    first = x509.load_pem_x509_csr((tmp_path / "first.csr").read_bytes())
    root, sign = _root()
    (tmp_path / "root.pem").write_bytes(root.public_bytes(PEM))
    (tmp_path / "issuing.pem").write_bytes(sign(first.subject, first.public_key()).public_bytes(PEM))
    assert run(state_dir, tmp_path, "ca", "init", "--issuing-cert", str(tmp_path / "issuing.pem"), "--root-cert",
               str(tmp_path / "root.pem")).returncode == 0
    old = issuing_of(state_dir, tmp_path)

    refused = run(state_dir, tmp_path, "ca", "recertify-issuing")
    assert refused.returncode == 1
    assert "external root" in refused.stderr and "--issuing-cert FILE" in refused.stderr
    assert "--csr-out" in refused.stderr
    assert "Traceback" not in refused.stderr

    asked = run(state_dir, tmp_path, "ca", "recertify-issuing", "--csr-out", str(tmp_path / "again.csr"))
    assert asked.returncode == 0, asked.stderr
    request = x509.load_pem_x509_csr((tmp_path / "again.csr").read_bytes())
    assert request.is_signature_valid and request.public_key() == old.public_key() and request.subject == old.subject

    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "other.pem").write_bytes(sign(request.subject, other_key).public_bytes(PEM))
    wrong = run(state_dir, tmp_path, "ca", "recertify-issuing", "--issuing-cert", str(tmp_path / "other.pem"))
    assert wrong.returncode == 1 and "not for the issuing CA's key" in wrong.stderr
    assert issuing_of(state_dir, tmp_path) == old

    new = sign(request.subject, request.public_key())
    (tmp_path / "new.pem").write_bytes(new.public_bytes(PEM))
    done = run(state_dir, tmp_path, "ca", "recertify-issuing", "--issuing-cert", str(tmp_path / "new.pem"))
    assert done.returncode == 0, done.stderr
    assert f"serial {new.serial_number:x}" in done.stdout
    assert issuing_of(state_dir, tmp_path) == new
    repeated = run(state_dir, tmp_path, "ca", "recertify-issuing", "--issuing-cert", str(tmp_path / "new.pem"))
    assert repeated.returncode == 0 and "nothing changed" in repeated.stdout
