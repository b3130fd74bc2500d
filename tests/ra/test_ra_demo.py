"""`signserver ra serve --demo` (signserver/ra/demo.py) with real parts: the RA's store, the
reference registry on loopback and a served core (mutual TLS with an RA client certificate). The
demo holder's registered data match the registry's sample (the identity and the selfie); a second
start reuses the holder, the operator and its files; the renewal is opened and confirmed once the
core has the demo holder, and only once. And the demo's mailbox shows and keeps what it is sent."""

from __future__ import annotations

import io
import os
import smtplib
import stat
import threading
from email.message import EmailMessage

import pyotp
import pytest

from signserver.client import CertificateClient, NewAccount
from signserver.ra import demo
from signserver.ra.demo_mailbox import DemoMailbox
from signserver.ra.errors import OperationRefused
from signserver.ra.operations import RaOperations
from signserver.ra.operator_accounts import OperatorAccounts
from signserver.ra.renewal import State, identity_differences
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.workflow import RenewalWorkflow
from tests.ca.test_certificate_service import client_pair
from tests.conftest import operator_hasher, smtp_on_loopback
from tests.ra.conftest import NoCore
from tests.ra.test_workflow import outbox


@pytest.fixture(scope="module")
def core(served, ca_service, ca_clock):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-demo-tests")
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with CertificateClient(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                           client_key=key, timeout_seconds=60, clock=ca_clock) as client:
        yield client


@pytest.fixture
def settings(tmp_path) -> RaSettings:
    # The notice at once, as `make run` sets it: the demo holder's certificate is new.
    return RaSettings(state_dir=tmp_path, notice_days=3650, face_threshold=0.8)


@pytest.fixture
def operators(ra_database, ca_clock):
    return OperatorAccounts(ra_database, ca_clock, os.urandom(32), hasher=operator_hasher())


def holder_registrations(database) -> int:
    with database.transaction() as conn:
        return sum(1 for entry in repository.audit_entries(conn) if entry["action"] == "holder_registered")


def test_the_demo_holder_matches_the_registry_s_sample(ra_database, ra_clock, settings, registry_client):
    workflow = RenewalWorkflow(ra_database, ra_clock, settings, registry=registry_client, certificates=NoCore())
    demo.register_demo_holder(ra_database, workflow)
    with ra_database.transaction() as conn:
        registered = repository.find_holder(conn, demo.DEMO_ACCOUNT)

    record = registry_client.fetch_identity(registered.id_type, registered.id_number, consent_reference="demo-test")
    assert identity_differences(record, registered, ra_clock.now().date()) == []
    score = registry_client.compare_face(registered.id_type, registered.id_number, demo.DEMO_SELFIE.read_bytes(),
                                         "image/png")
    assert score >= settings.face_threshold


def test_a_second_start_reuses_the_holder_the_operator_and_its_files(ra_database, ca_clock, settings, operators):
    workflow = RenewalWorkflow(ra_database, ca_clock, settings, registry=NoCore(), certificates=NoCore())
    folder = settings.state_dir / "demo"

    assert demo.register_demo_holder(ra_database, workflow) is True
    uri = demo.ensure_demo_operator(operators, folder)
    password_file, seed_file = folder / demo.OPERATOR_PASSWORD_FILE, folder / demo.OPERATOR_OTP_SEED_FILE
    first = (password_file.read_text(), seed_file.read_text())
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in (password_file, seed_file))

    assert demo.register_demo_holder(ra_database, workflow) is False
    assert demo.ensure_demo_operator(operators, folder) == uri
    assert (password_file.read_text(), seed_file.read_text()) == first
    assert holder_registrations(ra_database) == 1
    assert [account.name for account in operators.list()] == [demo.DEMO_OPERATOR]
    # What the files hold signs the operator in.
    code = pyotp.TOTP(seed_file.read_text().strip()).at(ca_clock.now())
    assert operators.authenticate(demo.DEMO_OPERATOR, password_file.read_text().strip(), code) == demo.DEMO_OPERATOR


def test_an_operator_whose_files_are_gone_gets_a_new_password_and_seed(ra_database, ca_clock, settings, operators):
    folder = settings.state_dir / "demo"
    demo.ensure_demo_operator(operators, folder)
    old_password = (folder / demo.OPERATOR_PASSWORD_FILE).read_text().strip()
    (folder / demo.OPERATOR_PASSWORD_FILE).unlink()

    demo.ensure_demo_operator(operators, folder)
    password = (folder / demo.OPERATOR_PASSWORD_FILE).read_text().strip()
    assert password != old_password
    code = pyotp.TOTP((folder / demo.OPERATOR_OTP_SEED_FILE).read_text().strip()).at(ca_clock.now())
    assert operators.authenticate(demo.DEMO_OPERATOR, password, code) == demo.DEMO_OPERATOR


def test_a_file_of_the_demo_readable_by_others_is_replaced_by_one_of_mode_0600(ra_database, ca_clock, settings,
                                                                               operators):
    """The OTP seed file left 0644 (restored from a copy, say) while the password's is gone: the
    new seed is never written into it, readable by others, but into a new file of mode 0600."""
    folder = settings.state_dir / "demo"
    demo.ensure_demo_operator(operators, folder)
    password_file, seed_file = folder / demo.OPERATOR_PASSWORD_FILE, folder / demo.OPERATOR_OTP_SEED_FILE
    old_seed = seed_file.read_text()
    password_file.unlink()
    seed_file.chmod(0o644)

    demo.ensure_demo_operator(operators, folder)
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    assert seed_file.read_text() != old_seed
    assert sorted(p.name for p in folder.iterdir()) == sorted([password_file.name, seed_file.name])
    code = pyotp.TOTP(seed_file.read_text().strip()).at(ca_clock.now())
    assert operators.authenticate(demo.DEMO_OPERATOR, password_file.read_text().strip(), code) == demo.DEMO_OPERATOR


def test_no_demo_operator_where_ra_operators_names_others_only(ra_database, ca_clock, settings):
    named = OperatorAccounts(ra_database, ca_clock, os.urandom(32), operators=("dsaj-operator",),
                             hasher=operator_hasher())
    assert demo.ensure_demo_operator(named, settings.state_dir / "demo") == ""
    assert named.list() == [] and not (settings.state_dir / "demo").exists()


def test_the_renewal_is_confirmed_once_the_core_has_the_demo_holder(ra_database, ca_clock, settings, operators,
                                                                       registry_client, core):
    workflow = RenewalWorkflow(ra_database, ca_clock, settings, registry=registry_client, certificates=core)
    operations = RaOperations(ra_database, ca_clock, core)
    before = demo.DemoRenewal(workflow, operations, threading.Event(), io.StringIO())
    with pytest.raises(OperationRefused):  # the core has no demo holder yet: the thread asks again
        before.open_once()

    core.create_account(NewAccount(account=demo.DEMO_ACCOUNT, holder_name="翁心 Weng Sam LUZIA KUAN",
                                   emails=demo.DEMO_EMAILS, password="Demo-pass-1", kind="corporate",
                                   organisation="Demo Lda"))
    issued = core.issue_certificate(demo.DEMO_ACCOUNT, "cloud-signature-corporate")
    stopping, shown = threading.Event(), io.StringIO()
    opener = demo.prepare_demo(settings, ra_database, workflow, operations, operators, stopping=stopping, out=shown)
    opener.join(60)
    stopping.set()
    assert not opener.is_alive()
    renewal = opener.renewal
    assert (renewal.serial, renewal.state, renewal.confirmed_by) == (issued.serial, State.AWAITING_IDENTITY,
                                                                     demo.DEMO_OPERATOR)
    assert [recipient for recipient, subject, _ in outbox(ra_database) if "renewal notice" in subject] == \
        list(demo.DEMO_EMAILS)
    assert settings.public_url in shown.getvalue() and str(settings.state_dir / "demo" / "password") in shown.getvalue()

    again = demo.prepare_demo(settings, ra_database, workflow, operations, operators, stopping=threading.Event(),
                              out=io.StringIO())
    again.join(60)
    assert again.renewal.id == renewal.id
    assert [r.id for r in workflow.renewals(account=demo.DEMO_ACCOUNT)] == [renewal.id]


def test_the_demo_mailbox_shows_and_keeps_each_message(tmp_path):
    shown = io.StringIO()
    mailbox = DemoMailbox(tmp_path / "mail", shown)
    controller = smtp_on_loopback(mailbox)
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "ra@localhost", "demo.holder@example.mo", "電郵驗證碼"
        message.set_content("驗證碼：123456\nVerification code: 123456\n")  # sent base64-encoded
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as smtp:
            smtp.send_message(message)
    finally:
        controller.stop()
    [kept] = (tmp_path / "mail").glob("0001-*.txt")
    text = kept.read_text(encoding="utf-8")
    assert text.startswith("To: demo.holder@example.mo\nSubject: 電郵驗證碼\n")
    assert "驗證碼：123456" in text and text in shown.getvalue()
    assert DemoMailbox(tmp_path / "mail")._first_number() == 2  # numbering goes on after a restart
