"""Online activation against a real served core (mutual TLS with an RA client certificate), the
reference registry on loopback and the RA's real store: the new certificate, the e-mail with old
and new serials, the core's refusals (AC-AB-0015, a wrong password), and an RA stopped during
activation that resumes without a second certificate."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from signserver.client import CertificateClient, Evidence, NewAccount, NotFound
from signserver.ra.errors import OperationRefused, StepRefused
from signserver.ra.holder_sign_in import HolderSignIn
from signserver.ra.renewal import State
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.store.schema import web_sessions
from signserver.ra.web.sessions import SessionStore
from signserver.ra.workflow import ActivationSecrets, RenewalWorkflow
from tests.ca.test_certificate_service import client_pair
from tests.ra.conftest import KUAN, InlineExecutor, application_signed_in_store, photo
from tests.ra.test_workflow import outbox, verify_emails

PASSWORD = "Current-pass-1"
PHRASE = "NewPhrase2027"


@pytest.fixture(scope="module")
def core(served, ca_service, ca_clock):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-activation-tests")
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with CertificateClient(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                           client_key=key, timeout_seconds=60, clock=ca_clock) as client:
        yield client


def make_workflow(ra_database, ca_clock, registry_client, core, executor=None):
    settings = RaSettings(notice_days=3650, face_threshold=0.8)  # the notice at once, whatever the validity
    return RenewalWorkflow(ra_database, ca_clock, settings, registry=registry_client, certificates=core,
                           executor=executor or InlineExecutor())


def enrolled(core, name: str):
    """A holder with the registry's data of KUAN and a cloud-signature certificate (its key P-256:
    tests/ra/running.py's create_account says why)."""
    core.create_account(NewAccount(account=name, holder_name=KUAN.name, emails=KUAN.emails, password=PASSWORD,
                                   kind="government", organisation="DSAJ", department="Legal",
                                   revocation_phrase="OldPhrase2024", key_algorithm="ec-p256"))
    issued = core.issue_certificate(name, "cloud-signature-government")
    return replace(KUAN, account=name), issued


def awaiting_activation(workflow, ra_database, core, name: str, issued_with=enrolled):
    holder, issued = issued_with(core, name)
    workflow.register_holder(holder, "dsaj-operator")
    renewal = workflow.confirm_renewal(issued.serial, "dsaj-operator")
    assert renewal.state is State.AWAITING_IDENTITY and renewal.expires == issued.not_after
    workflow.record_consent(renewal.id)
    verify_emails(workflow, ra_database, renewal)
    workflow.check_registry(renewal.id)
    workflow.compare_face(renewal.id, photo("kuan-weng-sam.png"))
    assert workflow.accept_agreement(renewal.id).state is State.AWAITING_APPLICATION
    application_signed_in_store(ra_database, renewal.id)  # signed for real in test_application
    return renewal, issued


def successors(core, account: str, serial: str) -> list:
    return [c for c in core.list_certificates(account) if c.predecessor_serial == serial]


def test_activation_renews_the_certificate_and_e_mails_both_serials(ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-1")
    started = workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert started.activation_reference
    done = workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    [new] = successors(core, "ra-act-1", issued.serial)
    assert done.new_serial == new.serial and done.new_expires == new.not_after
    assert new.not_after - new.not_before >= datetime.timedelta(days=3 * 365)  # valid 3 years
    mails = [body for _, subject, body in outbox(ra_database) if "activated" in subject]
    assert len(mails) == len(KUAN.emails) and issued.serial in mails[0] and new.serial in mails[0]
    with ra_database.transaction() as conn:
        details = [e["detail"] for e in repository.audit_entries(conn, renewal.id)]
    assert not any(PASSWORD in d or PHRASE in d for d in details)


def test_a_wrong_password_leaves_the_renewal_awaiting_activation(ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-2")
    workflow.start_activation(renewal.id, ActivationSecrets(password="Wrong-pass-1", revocation_phrase=PHRASE))
    stopped = workflow.get(renewal.id)
    assert stopped.state is State.AWAITING_ACTIVATION and stopped.refusal and "Wrong-pass-1" not in stopped.refusal
    assert stopped.refusal_reason == "AUTHENTICATION_FAILED"  # the core's reason: what the page reads
    assert successors(core, "ra-act-2", issued.serial) == []
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert workflow.get(renewal.id).state is State.ACTIVATED


def test_changed_subject_data_while_the_old_certificate_is_valid_is_0015(ra_database, ca_clock, registry_client,
                                                                          core, ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-3")
    ca_service.accounts.update_holder("ra-act-3", "test", title="Chefe")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    stopped = workflow.get(renewal.id)
    assert stopped.state is State.AWAITING_ACTIVATION and stopped.help_code == "AC-AB-0015"
    assert successors(core, "ra-act-3", issued.serial) == []


def test_changed_registered_data_are_0015_before_the_core_is_asked(ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-4")
    workflow.register_holder(replace(KUAN, account="ra-act-4", emails=("new@example.mo",)), "dsaj-operator")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert workflow.get(renewal.id).help_code == "AC-AB-0015"
    assert successors(core, "ra-act-4", issued.serial) == []


def test_stopped_after_the_core_renewed_resumes_without_a_second_certificate(ra_database, ca_clock, registry_client,
                                                                               core):
    held = InlineExecutor(hold=True)
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, held)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-5")
    started = workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    # The stopped process had sent its request, and the core renewed, before the RA recorded it.
    core.renew_certificate(issued.serial, evidence=Evidence(reference=started.activation_reference),
                           holder_password=PASSWORD, revocation_phrase=PHRASE)

    restarted = make_workflow(ra_database, ca_clock, registry_client, core)
    ca_clock.advance(seconds=restarted.activation_lifetime().total_seconds())
    assert restarted.resume_activations() == 1
    done = restarted.get(renewal.id)
    [new] = successors(core, "ra-act-5", issued.serial)
    assert done.state is State.ACTIVATED and done.new_serial == new.serial


def holder_sessions(ra_database, account: str) -> int:
    """How many pages' sessions the holder of ``account`` is signed in to."""
    with ra_database.transaction() as conn:
        return conn.execute(select(func.count()).select_from(web_sessions).where(
            web_sessions.c.kind == "holder", web_sessions.c.subject == account)).scalar_one()


def test_an_activation_resumed_after_the_core_set_a_new_password_ends_the_holder_s_sessions(
        ra_database, ca_clock, registry_client, core):
    held = InlineExecutor(hold=True)
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, held)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-13")
    core.revoke_certificate(issued.serial, "superseded", revocation_phrase="OldPhrase2024", account="ra-act-13")
    started = workflow.start_activation(renewal.id, ActivationSecrets(new_password="Brand-new-2",
                                                                      revocation_phrase=PHRASE),
                                        confirmation="Brand-new-2")
    sessions = SessionStore(ra_database, ca_clock, RaSettings())
    signed_in = sessions.new()  # a thief's, say, signed in with the old password
    signed_in.kind, signed_in.subject, signed_in.signed_in_at = "holder", "ra-act-13", sessions.now()
    signed_in.set("via", "account")
    sessions.save(signed_in)
    assert holder_sessions(ra_database, "ra-act-13") == 1
    # The stopped process had sent its request, and the core set the new password, before the RA
    # recorded it: restarted, the RA does not know whether a new password was set, and ends the
    # sessions as if one was.
    core.renew_certificate(issued.serial, evidence=Evidence(reference=started.activation_reference),
                           new_password="Brand-new-2", revocation_phrase=PHRASE)
    restarted = make_workflow(ra_database, ca_clock, registry_client, core)
    ca_clock.advance(seconds=restarted.activation_lifetime().total_seconds())
    assert restarted.resume_activations() == 1
    assert restarted.get(renewal.id).state is State.ACTIVATED
    assert holder_sessions(ra_database, "ra-act-13") == 0


def test_stopped_before_the_core_was_asked_activates_again_once(ra_database, ca_clock, registry_client, core):
    held = InlineExecutor(hold=True)
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, held)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-6")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))

    restarted = make_workflow(ra_database, ca_clock, registry_client, core)
    ca_clock.advance(seconds=restarted.activation_lifetime().total_seconds())
    assert restarted.resume_activations() == 1
    interrupted = restarted.get(renewal.id)
    assert interrupted.state is State.AWAITING_ACTIVATION and "interrupted" in interrupted.refusal
    assert interrupted.refusal_reason == "interrupted"
    assert successors(core, "ra-act-6", issued.serial) == []
    restarted.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert restarted.get(renewal.id).state is State.ACTIVATED
    assert len(successors(core, "ra-act-6", issued.serial)) == 1


def test_after_0015_the_holder_revokes_then_sets_a_new_password(ra_database, ca_clock, registry_client, core,
                                                                ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-7")
    ca_service.accounts.update_holder("ra-act-7", "test", title="Chefe")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert workflow.get(renewal.id).help_code == "AC-AB-0015"
    core.revoke_certificate(issued.serial, "superseded", revocation_phrase="OldPhrase2024", account="ra-act-7")
    with pytest.raises(StepRefused, match="not both"):
        workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, new_password="Brand-new-2",
                                                                revocation_phrase=PHRASE), confirmation="Brand-new-2")
    workflow.start_activation(renewal.id, ActivationSecrets(new_password="Brand-new-2", revocation_phrase=PHRASE),
                              confirmation="Brand-new-2")
    done = workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    assert [c.serial for c in successors(core, "ra-act-7", issued.serial)] == [done.new_serial]


def test_an_activation_in_flight_during_a_resume_pass_gives_one_certificate(ra_database, ca_clock,
                                                                           registry_client, core):
    held = InlineExecutor(hold=True)
    running = make_workflow(ra_database, ca_clock, registry_client, core, held)
    renewal, issued = awaiting_activation(running, ra_database, core, "ra-act-8")
    running.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))

    other = make_workflow(ra_database, ca_clock, registry_client, core)  # another RA process, same store
    assert other.resume_activations() == 0  # begun just now: perhaps still running there
    assert other.get(renewal.id).state is State.ACTIVATING
    [(task, args)] = held.held
    task(*args)  # the activation goes on in its own process
    done = running.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    assert [c.serial for c in successors(core, "ra-act-8", issued.serial)] == [done.new_serial]


class RenewedMeanwhile:
    """The real core, where another RA process's renewal of the same certificate lands between
    this one's look for a successor and its own request (the race the core's ALREADY_RENEWED
    settles)."""

    def __init__(self, core):
        self._core = core

    def __getattr__(self, name):
        return getattr(self._core, name)

    def renew_certificate(self, serial, **request):
        self._core.renew_certificate(serial, **request)  # the other process's request
        return self._core.renew_certificate(serial, **request)


def test_a_renewal_the_core_made_meanwhile_finishes_the_activation(ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, RenewedMeanwhile(core))
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-9")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    done = workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    assert [c.serial for c in successors(core, "ra-act-9", issued.serial)] == [done.new_serial]


class RefusingToList:
    """The real core, except that it refuses to list ``account`` (as after the account was removed)."""

    def __init__(self, core, account: str):
        self._core = core
        self._account = account

    def __getattr__(self, name):
        return getattr(self._core, name)

    def list_certificates(self, account="", expiring_within_days=0):
        if account == self._account:
            raise NotFound("NOT_FOUND", f"no account {account}")
        return self._core.list_certificates(account, expiring_within_days)


def test_one_activation_that_cannot_be_settled_does_not_stop_the_resume_pass(ra_database, ca_clock,
                                                                             registry_client, core):
    held = InlineExecutor(hold=True)
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, held)
    stuck, _ = awaiting_activation(workflow, ra_database, core, "ra-act-10")
    ca_clock.advance(seconds=1)  # listed first: the pass meets it before the other
    other, _ = awaiting_activation(workflow, ra_database, core, "ra-act-11")
    for renewal in (stuck, other):
        workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))

    restarted = make_workflow(ra_database, ca_clock, registry_client, RefusingToList(core, "ra-act-10"))
    ca_clock.advance(seconds=restarted.activation_lifetime().total_seconds())
    restarted.resume_activations()
    assert restarted.get(other.id).state is State.AWAITING_ACTIVATION
    assert restarted.get(stuck.id).state is State.ACTIVATING  # left for the next pass


def card_csr(name: str = KUAN.name) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)


def enrolled_qualified(core, name: str):
    """A holder with the registry's data of KUAN and a qualified certificate (the key on a card)."""
    core.create_account(NewAccount(account=name, holder_name=KUAN.name, emails=KUAN.emails, password=PASSWORD,
                                   kind="government", organisation="DSAJ", department="Legal",
                                   key_algorithm="ec-p256"))
    issued = core.issue_certificate(name, "qualified-government", csr=card_csr())
    return replace(KUAN, account=name), issued


def core_evidence(ca_service, serial: str) -> list[dict]:
    from sqlalchemy import select

    from signserver.store.schema import audit_log

    with ca_service.database.read() as conn:
        details = [json.loads(r.detail) for r in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.event == "ra.request", audit_log.c.subject == serial))]
    return [d["evidence"] for d in details if d["method"] == "RenewCertificate"]


def test_completion_in_person_renews_through_the_core_with_the_evidence(ra_database, ca_clock, registry_client, core,
                                                                        ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-person-1", enrolled_qualified)
    assert workflow.get(renewal.id).state is State.AWAITING_IN_PERSON
    with pytest.raises(OperationRefused, match="CSR"):
        workflow.complete_in_person(renewal.id, "counter-2", b"")

    done = workflow.complete_in_person(renewal.id, "counter-2", card_csr())
    [new] = successors(core, "ra-person-1", issued.serial)
    assert done.state is State.COMPLETED_IN_PERSON and done.new_serial == new.serial
    assert done.new_expires == new.not_after and new.profile == "qualified-government"
    [evidence] = core_evidence(ca_service, issued.serial)
    assert evidence["registry_match"].startswith("matched:") and evidence["face_score"] is not None
    assert len(evidence["email_verifications"]) == len(KUAN.emails) and evidence["application_sha256"]
    assert evidence["reference"] == f"{renewal.id} operator=counter-2"
    mails = [body for _, subject, body in outbox(ra_database) if new.serial in body]
    assert mails and issued.serial in mails[0]
    with pytest.raises(StepRefused):
        workflow.complete_in_person(renewal.id, "counter-2", card_csr())
    assert len(successors(core, "ra-person-1", issued.serial)) == 1


def test_a_notice_sign_in_code_verifies_no_address_in_the_evidence(ra_database, ca_clock, registry_client, core,
                                                                   ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-14")
    # The holder signs in with the notice's link and the code e-mailed to every address at once.
    [token] = {re.search(r"Access key: (\S+)", body).group(1) for _, _, body in outbox(ra_database)
               if "Access key:" in body}
    sign_in = HolderSignIn(ra_database, ca_clock, RaSettings())
    pending = sign_in.send_code(sign_in.follow_link(renewal.id, token))
    [code] = {re.search(r"Sign-in code: (\d{6})", body).group(1) for _, _, body in outbox(ra_database)
              if "Sign-in code:" in body}
    assert sign_in.verify(pending, code).id == renewal.id
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    assert workflow.get(renewal.id).state is State.ACTIVATED
    [evidence] = core_evidence(ca_service, issued.serial)
    assert sorted(address for address, _ in evidence["email_verifications"]) == sorted(KUAN.emails)


def test_a_completion_the_core_made_before_a_failure_is_recorded_once(ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-person-2", enrolled_qualified)
    # The first try reached the core, and the RA stopped before recording the new certificate.
    first = core.renew_certificate(issued.serial, evidence=Evidence(reference=renewal.id), csr=card_csr())
    done = workflow.complete_in_person(renewal.id, "counter-2", card_csr())
    assert done.state is State.COMPLETED_IN_PERSON and done.new_serial == first.serial
    assert [c.serial for c in successors(core, "ra-person-2", issued.serial)] == [first.serial]


class RenewedAndRevokedMeanwhile:
    """The real core, where another RA process's renewal of the same certificate lands, and its new
    certificate is revoked, between this one's request and its look for the successor: the core
    says ALREADY_RENEWED, and no successor is left to finish with."""

    def __init__(self, core):
        self._core = core

    def __getattr__(self, name):
        return getattr(self._core, name)

    def renew_certificate(self, serial, **request):
        other = self._core.renew_certificate(serial, **request)  # the other process's request
        try:
            return self._core.renew_certificate(serial, **request)
        finally:
            self._core.revoke_certificate(other.serial, "superseded")


def test_an_activation_renewed_and_revoked_meanwhile_stops_saying_it_was_renewed_already(
        ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, RenewedAndRevokedMeanwhile(core))
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-act-12")
    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    stopped = workflow.get(renewal.id)
    assert stopped.state is State.AWAITING_ACTIVATION
    assert "renewed already" in stopped.refusal and stopped.refusal_reason == "ALREADY_RENEWED"


def test_a_completion_renewed_and_revoked_meanwhile_is_refused_saying_it_was_renewed_already(
        ra_database, ca_clock, registry_client, core):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core)
    renewal, issued = awaiting_activation(workflow, ra_database, core, "ra-person-3", enrolled_qualified)
    racing = make_workflow(ra_database, ca_clock, registry_client, RenewedAndRevokedMeanwhile(core))
    with pytest.raises(StepRefused, match="renewed already") as refused:
        racing.complete_in_person(renewal.id, "counter-2", card_csr())
    assert refused.value.reason == "ALREADY_RENEWED"
    assert workflow.get(renewal.id).state is State.AWAITING_IN_PERSON
