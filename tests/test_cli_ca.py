"""`signserver ca` as an operator runs it, on a state directory of its own."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, database_url


@pytest.fixture(scope="module")
def state(state_dir, tmp_path_factory):
    """The shared token, with a database of this module's own."""
    return tmp_path_factory.mktemp("cli-ca")


def run(state_dir, db, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=180,
                              env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"), **env))


def test_ca_commands(state_dir, state, tmp_path):
    init = run(state_dir, state, "ca", "init")
    assert init.returncode == 0, init.stderr
    assert "ready" in init.stdout and "signserver Root CA" in init.stdout
    again = run(state_dir, state, "ca", "init")
    assert again.returncode == 1 and "already initialised" in again.stderr

    created = run(state_dir, state, "account", "create", "ca-cli-holder", "--name", "Chan Tai Man",
                  "--email", "chan@example.mo", "--kind", "government", "--organisation", "DSAJ",
                  SIGNSERVER_ACCOUNT_PASSWORD="Holder-pass-1")
    assert created.returncode == 0, created.stderr
    out = tmp_path / "holder.pem"
    wrong_variant = run(state_dir, state, "ca", "issue", "ca-cli-holder", "--profile", "cloud-signature-corporate")
    assert wrong_variant.returncode == 1 and "is for corporate accounts" in wrong_variant.stderr
    issued = run(state_dir, state, "ca", "issue", "ca-cli-holder", "--profile", "cloud-signature-government",
                 "--out", str(out), "--json")
    assert issued.returncode == 0, issued.stderr
    serial = json.loads(issued.stdout)["serial"]
    assert x509.load_pem_x509_certificate(out.read_bytes()).serial_number == int(serial, 16)

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Chan Tai Man")]))
           .sign(key, hashes.SHA256()))
    (tmp_path / "req.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    standard = run(state_dir, state, "ca", "issue", "ca-cli-holder", "--profile", "standard-government",
                   "--csr", str(tmp_path / "req.pem"))
    assert standard.returncode == 0, standard.stderr

    renewed = run(state_dir, state, "ca", "renew", serial, "--json")
    assert renewed.returncode == 0 and json.loads(renewed.stdout)["predecessor_serial"] == serial
    revoked = run(state_dir, state, "ca", "revoke", serial, "--reason", "superseded")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    listed = run(state_dir, state, "ca", "list", "--account", "ca-cli-holder")
    assert listed.stdout.count("ca-cli-holder") == 3
    assert run(state_dir, state, "ca", "list", "--expiring-within", "30").stdout.strip() == "no certificates"

    crl = run(state_dir, state, "ca", "crl", "--refresh")
    assert crl.returncode == 0 and crl.stdout.startswith("-----BEGIN X509 CRL-----")
    parsed = x509.load_pem_x509_crl(crl.stdout.encode())
    assert parsed.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    client = run(state_dir, state, "ca", "issue-client", "--role", "ra", "ra-desk-1", "--out-dir", str(tmp_path),
                 "--json")
    assert client.returncode == 0, client.stderr
    files = json.loads(client.stdout)
    assert (tmp_path / "ra-desk-1-key.pem").stat().st_mode & 0o077 == 0
    assert x509.load_pem_x509_certificate((tmp_path / "ra-desk-1.pem").read_bytes()).subject.rfc4514_string() \
        == "CN=ra-desk-1,O=signserver,C=MO"
    assert files["sha256"]


def usage_error(result) -> str:
    """The one ``error:`` line of a command refused as a usage error (exit 2), after argparse's usage."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("args", [
    ("ca", "issue", "\udcff", "--profile", "cloud-signature-corporate"),
    ("ca", "issue", "someone", "--profile", "qualified-corporate", "--agent-qualification", "\udcff"),
    ("ca", "renew", "\udcff"),
    ("ca", "revoke", "\udcff"),
    ("ca", "list", "--account", "\udcff"),
    ("ca", "issue-client", "--role", "ra", "\udcff"),
], ids=["issue", "agent-qualification", "renew", "revoke", "list", "issue-client"])
def test_an_argument_that_is_not_text_is_a_usage_error(state_dir, state, args):
    """A byte that is not UTF-8 on the command line (a terminal in another encoding) reaches Python
    as a lone surrogate, which the database cannot take: refused before anything is done."""
    assert "not valid UTF-8 text" in usage_error(run(state_dir, state, *args))


@pytest.mark.parametrize("days", ["99999999999999", "36501", "-1", "a year"])
def test_expiring_within_takes_a_number_of_days_up_to_a_century(state_dir, state, days):
    assert "--expiring-within" in usage_error(run(state_dir, state, "ca", "list", "--expiring-within", days))


def test_issue_client_replaces_a_key_file_others_could_read(state_dir, state, tmp_path):
    """The private key goes into a new file of mode 0600 that takes the old one's place: written
    into a file that was there, it kept that file's mode (0644, readable by every user), and a
    symbolic link there was followed."""
    assert run(state_dir, state, "ca", "init").returncode in (0, 1)  # 1: initialised by another test already
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "perm-key.pem").write_text("an old key\n")
    (clients / "perm-key.pem").chmod(0o644)
    elsewhere = tmp_path / "elsewhere.pem"
    (clients / "linked-key.pem").symlink_to(elsewhere)
    for name in ("perm", "linked"):
        issued = run(state_dir, state, "ca", "issue-client", "--role", "ra", name, "--out-dir", str(clients))
        assert issued.returncode == 0, issued.stderr
        assert f"{clients / f'{name}-key.pem'} (mode 0600)" in issued.stdout
        key = clients / f"{name}-key.pem"
        assert not key.is_symlink() and key.stat().st_mode & 0o777 == 0o600
        serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert not elsewhere.exists()
    assert sorted(p.name for p in clients.iterdir()) == ["ca.pem", "linked-key.pem", "linked.pem", "perm-key.pem",
                                                         "perm.pem"]


def test_external_root_flow(state_dir, tmp_path_factory, tmp_path):
    db = tmp_path_factory.mktemp("external")
    begun = run(state_dir, db, "ca", "init", "--external-root", "--csr-out", str(tmp_path / "issuing.csr"))
    assert begun.returncode == 0, begun.stderr
    request = x509.load_pem_x509_csr((tmp_path / "issuing.csr").read_bytes())
    assert request.is_signature_valid

    import datetime

    root_key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External Root")])
    now = datetime.datetime.now(datetime.timezone.utc)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(root_key, hashes.SHA384()))
    issuing = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(name)
               .public_key(request.public_key()).serial_number(2).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1825))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(root_key, hashes.SHA384()))
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    wrong = run(state_dir, db, "ca", "init", "--issuing-cert", str(tmp_path / "root.pem"), "--root-cert",
                str(tmp_path / "root.pem"))
    assert wrong.returncode == 1 and "not for the key" in wrong.stderr
    done = run(state_dir, db, "ca", "init", "--issuing-cert", str(tmp_path / "issuing.pem"), "--root-cert",
               str(tmp_path / "root.pem"))
    assert done.returncode == 0, done.stderr
    assert "External Root" in done.stdout and "ready" in done.stdout
