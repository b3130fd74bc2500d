"""The renewal workflow over the RA's real store and the reference registry on loopback (real
HTTP), with time moved by hand: identity verification, codes, the registry down and back, the
face threshold, the help codes' situations, the in-person queue."""

from __future__ import annotations

import datetime
import re

import pytest

from signserver.ra.errors import CodeRefused, HolderNotAuthorised, PhotoRefused, StepRefused
from signserver.ra.renewal import State
from signserver.ra.store import repository
from signserver.ra.workflow import ActivationSecrets, RenewalWorkflow
from signserver.registry_dev.faults import Fault
from tests.ra.conftest import (CHAN_EXPIRED, KUAN, SILVA_PASSPORT, NoCore, application_signed_in_store,
                               files_not_taken, opened_renewal, photo)


@pytest.fixture
def workflow(ra_database, ra_clock, ra_settings, registry_client):
    return RenewalWorkflow(ra_database, ra_clock, ra_settings, registry=registry_client, certificates=NoCore())


FAR_FUTURE = datetime.datetime(2200, 1, 1, tzinfo=datetime.timezone.utc)  # every queued message is due by then


def outbox(database) -> list:
    with database.transaction() as conn:
        return [(m.recipient, m.subject, m.body) for m in repository.due_emails(conn, FAR_FUTURE, limit=1000)]


def clear_outbox(database) -> None:
    with database.transaction() as conn:
        for message in repository.due_emails(conn, FAR_FUTURE, 1000):
            repository.email_sent(conn, message.id)


def code_sent_to(database, address: str) -> str:
    bodies = [body for recipient, _, body in outbox(database) if recipient == address]
    return re.search(r"\b(\d{6})\b", bodies[-1]).group(1)


def noticed(workflow, database, clock, holder=KUAN, **opened):
    """A renewal confirmed by the operator 20 days before expiry: the holder is told at once."""
    opened.setdefault("expires", clock.now() + datetime.timedelta(days=20))
    renewal = opened_renewal(database, holder, clock.now(), **opened)
    workflow.confirm_renewal(renewal.serial, "dsaj-operator")
    return workflow.get(renewal.id)


def verify_emails(workflow, database, renewal) -> None:
    for address in renewal.emails:
        assert workflow.send_code(renewal.id, address)
        workflow.verify_code(renewal.id, address, code_sent_to(database, address))


def identity_verified(workflow, database, renewal, face: str = "kuan-weng-sam.png"):
    workflow.record_consent(renewal.id)
    verify_emails(workflow, database, renewal)
    workflow.check_registry(renewal.id)
    workflow.compare_face(renewal.id, photo(face))
    assert workflow.accept_agreement(renewal.id).state is State.AWAITING_APPLICATION
    return application_signed_in_store(database, renewal.id)


def test_confirmation_sends_the_notice_30_days_before_expiry(workflow, ra_database, ra_clock):
    renewal = opened_renewal(ra_database, KUAN, ra_clock.now(), expires=ra_clock.now() + datetime.timedelta(days=45))
    assert workflow.confirm_renewal(renewal.serial, "dsaj-operator").state is State.CONFIRMED
    assert outbox(ra_database) == [] and workflow.run_notices() == 0
    ra_clock.advance(days=15)
    assert workflow.run_notices() == 1 and workflow.run_notices() == 0
    assert workflow.get(renewal.id).state is State.AWAITING_IDENTITY
    notices = outbox(ra_database)
    assert sorted(r for r, _, _ in notices) == sorted(KUAN.emails) and renewal.id in notices[0][2]


def test_a_cloud_signature_renewal_reaches_online_activation(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    done = identity_verified(workflow, ra_database, renewal)
    assert done.state is State.AWAITING_ACTIVATION and done.face_score > 0.9 and not done.help_code
    with ra_database.transaction() as conn:
        actions = [e["action"] for e in repository.audit_entries(conn, renewal.id)]
        assert repository.verify_trail(conn) is None
    assert actions[:2] == ["renewal_confirmed", "notice_sent"]
    assert {"consent_recorded", "code_sent", "code_verified", "registry_matched", "face_matched",
            "agreement_accepted"} <= set(actions)


def test_every_address_must_be_verified_before_the_agreement(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    workflow.check_registry(renewal.id)
    workflow.compare_face(renewal.id, photo("kuan-weng-sam.png"))
    workflow.send_code(renewal.id, KUAN.emails[0])
    workflow.verify_code(renewal.id, KUAN.emails[0], code_sent_to(ra_database, KUAN.emails[0]))
    with pytest.raises(StepRefused, match=re.escape(KUAN.emails[1])):
        workflow.accept_agreement(renewal.id)
    with pytest.raises(StepRefused, match="not an e-mail address"):
        workflow.send_code(renewal.id, "someone@example.com")


def test_a_code_after_300_seconds_and_too_many_attempts(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    address = KUAN.emails[0]
    workflow.send_code(renewal.id, address)
    code = code_sent_to(ra_database, address)
    ra_clock.advance(seconds=300)
    with pytest.raises(CodeRefused, match="expired"):
        workflow.verify_code(renewal.id, address, code)
    workflow.send_code(renewal.id, address)
    code = code_sent_to(ra_database, address)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(CodeRefused, match="not the one"):
            workflow.verify_code(renewal.id, address, wrong)
    with pytest.raises(CodeRefused, match="too many"):
        workflow.verify_code(renewal.id, address, code)
    with pytest.raises(CodeRefused, match="wait"):  # new codes on demand would allow any number of guesses
        workflow.send_code(renewal.id, address)
    ra_clock.advance(seconds=60)
    workflow.send_code(renewal.id, address)
    workflow.verify_code(renewal.id, address, code_sent_to(ra_database, address))
    assert workflow.unverified_emails(workflow.get(renewal.id)) == [KUAN.emails[1]]


def test_an_address_verified_in_the_last_30_days_is_not_asked_again(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    verify_emails(workflow, ra_database, renewal)
    clear_outbox(ra_database)
    ra_clock.advance(days=30)
    assert not workflow.send_code(renewal.id, KUAN.emails[0]) and outbox(ra_database) == []
    assert workflow.unverified_emails(workflow.get(renewal.id)) == []
    ra_clock.advance(seconds=1)
    assert workflow.unverified_emails(workflow.get(renewal.id)) == list(KUAN.emails)
    assert workflow.send_code(renewal.id, KUAN.emails[0]) and len(outbox(ra_database)) == 1


def test_the_registry_down_and_back(workflow, ra_database, ra_clock, registry):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    registry.state.faults.set(Fault(status=503))
    waiting = workflow.check_registry(renewal.id)
    assert waiting.state is State.WAITING_FOR_REGISTRY and waiting.resume_step == "registry_match"
    assert workflow.retry_registry() == 0 and workflow.get(renewal.id).version == waiting.version  # still down
    registry.state.faults.clear()
    assert workflow.retry_registry() == 1
    back = workflow.get(renewal.id)
    assert back.state is State.AWAITING_IDENTITY and back.registry_checked_at and back.consent_at


def test_the_face_service_down_then_the_photo_sent_again(workflow, ra_database, ra_clock, registry):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    workflow.check_registry(renewal.id)
    registry.state.faults.set(Fault(status=502))
    assert workflow.compare_face(renewal.id, photo("kuan-weng-sam.png")).state is \
        State.WAITING_FOR_REGISTRY
    registry.state.faults.clear()
    assert workflow.compare_face(renewal.id, photo("kuan-weng-sam.png")).state is State.AWAITING_IDENTITY


def test_a_face_score_below_the_threshold(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    workflow.check_registry(renewal.id)
    with pytest.raises(StepRefused, match="photo does not match"):
        workflow.compare_face(renewal.id, photo("chan-tai-man.jpg"))
    assert workflow.get(renewal.id).face_score is None
    with ra_database.transaction() as conn:
        assert "face_below_threshold" in [e["action"] for e in repository.audit_entries(conn, renewal.id)]


def test_an_expired_identity_document_is_0014_with_an_e_mail(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock, holder=CHAN_EXPIRED)
    workflow.record_consent(renewal.id)
    clear_outbox(ra_database)
    with pytest.raises(StepRefused) as refused:
        workflow.check_registry(renewal.id)
    assert refused.value.help_code == "AC-AB-0014"
    again = workflow.get(renewal.id)
    assert again.state is State.AWAITING_IDENTITY and again.consent_at is None and again.help_code == "AC-AB-0014"
    assert [(r, "AC-AB-0014" in body) for r, _, body in outbox(ra_database)] == [(CHAN_EXPIRED.emails[0], True)]


def test_changed_macau_data_are_0014_but_a_non_macau_document_is_refused_outright(workflow, ra_database, ra_clock):
    moved = noticed(workflow, ra_database, ra_clock, holder=KUAN.__class__(**{**KUAN.__dict__, "name": "KUAN WENG SAM"}))
    workflow.record_consent(moved.id)
    with pytest.raises(StepRefused) as refused:
        workflow.check_registry(moved.id)
    assert refused.value.help_code == "AC-AB-0014" and "name" in workflow.get(moved.id).refusal

    foreign = SILVA_PASSPORT.__class__(**{**SILVA_PASSPORT.__dict__, "name": "MARIA SILVA"})
    renewal = noticed(workflow, ra_database, ra_clock, holder=foreign, serial="77aa")
    workflow.record_consent(renewal.id)
    with pytest.raises(StepRefused, match="in person") as refused:
        workflow.check_registry(renewal.id)
    assert not refused.value.help_code and workflow.get(renewal.id).state is State.REFUSED


def test_a_matching_non_macau_document_goes_on(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock, holder=SILVA_PASSPORT)
    workflow.record_consent(renewal.id)
    assert workflow.check_registry(renewal.id).registry_checked_at is not None


def test_other_types_wait_in_person(workflow, ra_database, ra_clock):
    """(Completing them at the counter renews through the core: tests/ra/test_activation.py.)"""
    renewal = noticed(workflow, ra_database, ra_clock, profile="qualified-government")
    done = identity_verified(workflow, ra_database, renewal)
    assert done.state is State.AWAITING_IN_PERSON and done.help_code == "AC-AB-0007"
    with pytest.raises(StepRefused) as refused:
        workflow.start_activation(renewal.id, ActivationSecrets(password="Current-1", revocation_phrase="Phrase2027ok"))
    assert refused.value.help_code == "AC-AB-0007"
    assert [r.id for r in workflow.renewals((State.AWAITING_IN_PERSON,))] == [renewal.id]


def test_activation_input_is_checked_before_anything_runs(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    identity_verified(workflow, ra_database, renewal)
    with pytest.raises(StepRefused, match="revocation phrase"):
        workflow.start_activation(renewal.id, ActivationSecrets(password="Current-1", revocation_phrase="short"))
    with pytest.raises(StepRefused, match="password"):
        workflow.start_activation(renewal.id, ActivationSecrets(revocation_phrase="Phrase2027ok"))
    with pytest.raises(StepRefused, match="confirmation"):
        workflow.start_activation(renewal.id, ActivationSecrets(new_password="New-pass-1", revocation_phrase="Phrase2027ok"),
                                  confirmation="New-pass-2")
    assert workflow.get(renewal.id).state is State.AWAITING_ACTIVATION


# Limits on e-mail codes (a 6-digit code is not guessed by asking for new ones)

def wrong_code(database, address: str) -> str:
    return "000000" if code_sent_to(database, address) != "000000" else "111111"


def test_guessing_across_new_codes_blocks_the_address_until_an_operator_reopens_it(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    address = KUAN.emails[0]
    for _ in range(2):  # 2 codes x 5 wrong guesses: the 10th wrong code blocks the address
        workflow.send_code(renewal.id, address)
        for _ in range(4):
            with pytest.raises(CodeRefused, match="not the one"):
                workflow.verify_code(renewal.id, address, wrong_code(ra_database, address))
        ra_clock.advance(seconds=60)
        with pytest.raises(CodeRefused):
            workflow.verify_code(renewal.id, address, wrong_code(ra_database, address))
    ra_clock.advance(seconds=60)
    with pytest.raises(CodeRefused, match="blocked"):
        workflow.send_code(renewal.id, address)
    with pytest.raises(CodeRefused, match="blocked"):
        workflow.verify_code(renewal.id, address, code_sent_to(ra_database, address))
    assert workflow.send_code(renewal.id, KUAN.emails[1])  # the other address is not blocked
    with ra_database.transaction() as conn:
        actions = [e["action"] for e in repository.audit_entries(conn, renewal.id)]
    assert actions.count("code_wrong") == 10 and actions.count("address_blocked") == 1

    workflow.reopen_limits(renewal.id, "dsaj-operator")
    workflow.send_code(renewal.id, address)
    workflow.verify_code(renewal.id, address, code_sent_to(ra_database, address))
    assert workflow.unverified_emails(workflow.get(renewal.id)) == [KUAN.emails[1]]


def test_codes_sent_to_an_address_are_limited_in_total(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    for _ in range(5):
        assert workflow.send_code(renewal.id, KUAN.emails[0])
        ra_clock.advance(seconds=300)
    with pytest.raises(CodeRefused, match="blocked"):
        workflow.send_code(renewal.id, KUAN.emails[0])


def test_a_code_e_mail_is_dropped_unsent_once_the_code_expired(workflow, ra_database, ra_clock):
    import socket

    from signserver.ra.mailer import OutboxMailer

    renewal = noticed(workflow, ra_database, ra_clock)
    clear_outbox(ra_database)
    with socket.socket() as closed:  # a port nothing listens on: the SMTP server is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    mailer = OutboxMailer(ra_database, ra_clock, host="127.0.0.1", port=port, sender="ra@example.mo")
    workflow.send_code(renewal.id, KUAN.emails[0])
    assert mailer.send_due() == 0 and len(outbox(ra_database)) == 1  # kept to try again
    ra_clock.advance(seconds=300)
    mailer.send_due()
    assert outbox(ra_database) == []


# The holder's token

def holder_token_sent(database, address: str = KUAN.emails[0]) -> str:
    bodies = [body for recipient, _, body in outbox(database) if recipient == address]
    return re.findall(r"Access key: (\S+)", bodies[-1])[-1]


def test_only_the_token_of_the_notice_opens_the_holder_s_steps(workflow, ra_database, ra_clock, caplog):
    caplog.set_level("DEBUG")
    renewal = noticed(workflow, ra_database, ra_clock)
    token = holder_token_sent(ra_database)
    assert len(token) >= 43 and holder_token_sent(ra_database, KUAN.emails[1]) == token
    assert workflow.check_holder(renewal.id, token).id == renewal.id
    refusals = set()
    for renewal_id, given in ((renewal.id, ""), (renewal.id, token + "x"), (renewal.id, renewal.id),
                              ("no-such-renewal", token)):
        with pytest.raises(HolderNotAuthorised) as refused:
            workflow.check_holder(renewal_id, given)
        refusals.add(str(refused.value))
    assert len(refusals) == 1  # nothing tells a missing renewal from a wrong token
    with ra_database.transaction() as conn:
        stored = repr([tuple(row) for table in ("ra_renewals", "ra_audit_trail")
                       for row in conn.exec_driver_sql(f"SELECT * FROM {table}")])
    assert token not in stored and token not in caplog.text


def test_the_holder_token_ends_a_grace_after_the_old_certificate_and_with_the_renewal(workflow, ra_database,
                                                                                       ra_clock):
    from signserver.ra.renewal import HOLDER_TOKEN_GRACE

    renewal = noticed(workflow, ra_database, ra_clock, expires=ra_clock.now() + datetime.timedelta(days=20))
    token = holder_token_sent(ra_database)
    ra_clock.advance(days=21)  # the old certificate expired; the renewal may still finish
    assert workflow.check_holder(renewal.id, token).id == renewal.id
    ra_clock.advance(seconds=HOLDER_TOKEN_GRACE.total_seconds())
    with pytest.raises(HolderNotAuthorised):
        workflow.check_holder(renewal.id, token)

    foreign = SILVA_PASSPORT.__class__(**{**SILVA_PASSPORT.__dict__, "name": "MARIA SILVA"})
    refused = noticed(workflow, ra_database, ra_clock, holder=foreign, serial="77aa")
    token = holder_token_sent(ra_database, foreign.emails[0])
    workflow.record_consent(refused.id)
    with pytest.raises(StepRefused):
        workflow.check_registry(refused.id)
    with pytest.raises(HolderNotAuthorised):
        workflow.check_holder(refused.id, token)
    assert workflow.check_holder(refused.id, token, reading=True).state is State.REFUSED


def test_a_notice_sent_again_replaces_the_token(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    first = holder_token_sent(ra_database)
    workflow.resend_notice(renewal.id, "dsaj-operator")
    second = holder_token_sent(ra_database)
    assert second != first and workflow.check_holder(renewal.id, second).id == renewal.id
    with pytest.raises(HolderNotAuthorised):
        workflow.check_holder(renewal.id, first)
    # The notice not sent yet, whose link no longer works, does not go out after the new one.
    waiting = [body for _, _, body in outbox(ra_database)]
    assert not any(first in body for body in waiting)
    assert sum(second in body for body in waiting) == len(renewal.emails)


# Limits on registry lookups and face comparisons; one registry attempt on the holder's path

def test_face_comparisons_and_registry_lookups_are_limited_per_renewal(workflow, ra_database, ra_clock):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    for _ in range(5):
        workflow.check_registry(renewal.id)
    with pytest.raises(StepRefused, match="registry was asked 5 times"):
        workflow.check_registry(renewal.id)
    for _ in range(5):
        with pytest.raises(StepRefused, match="photo does not match"):
            workflow.compare_face(renewal.id, photo("chan-tai-man.jpg"))
    with pytest.raises(StepRefused, match="compared 5 times"):
        workflow.compare_face(renewal.id, photo("kuan-weng-sam.png"))
    workflow.reopen_limits(renewal.id, "dsaj-operator")
    assert workflow.compare_face(renewal.id, photo("kuan-weng-sam.png")).face_score > 0.9


def test_only_the_comparisons_the_registry_answered_are_counted(workflow, ra_database, ra_clock, registry):
    renewal = noticed(workflow, ra_database, ra_clock)
    workflow.record_consent(renewal.id)
    workflow.check_registry(renewal.id)
    me = photo("kuan-weng-sam.png")
    for _, content, _ in files_not_taken():
        with pytest.raises(PhotoRefused):  # told by its bytes, refused before the registry is asked
            workflow.compare_face(renewal.id, content)
    registry.state.faults.set(Fault(status=502))
    try:
        for _ in range(2):  # sent, then sent again while the renewal waits
            assert workflow.compare_face(renewal.id, me).state is State.WAITING_FOR_REGISTRY
    finally:
        registry.state.faults.clear()
    assert workflow.get(renewal.id).face_comparisons == 0
    assert workflow.compare_face(renewal.id, me).face_comparisons == 1


# Not the holder's doing: the registry refusing the RA itself (its API key or client certificate,
# a request it calls malformed), or busy, or down.
@pytest.mark.parametrize("status", [400, 401, 403, 429, 500, 502, 503, 504])
def test_a_registry_answer_that_is_not_about_the_holder_uses_up_none_of_the_tries(
        ra_database, ra_clock, ra_settings, registry, registry_client, status):
    from signserver.ra.registry import RegistryClient

    with RegistryClient(registry.url, timeout_seconds=10, attempts=1) as once:  # as on the holder's path
        workflow = RenewalWorkflow(ra_database, ra_clock, ra_settings, registry=registry_client, certificates=NoCore(),
                                   holder_registry=once)
        renewal = noticed(workflow, ra_database, ra_clock)
        workflow.record_consent(renewal.id)
        me = photo("kuan-weng-sam.png")
        for step, tries in ((lambda: workflow.check_registry(renewal.id), ra_settings.registry_lookups),
                            (lambda: workflow.compare_face(renewal.id, me), ra_settings.face_comparisons)):
            registry.state.faults.set(Fault(status=status))
            try:
                for _ in range(tries + 1):  # past the limit: none counted
                    assert step().state is State.WAITING_FOR_REGISTRY
            finally:
                registry.state.faults.clear()
            assert step().state is State.AWAITING_IDENTITY
        answered = workflow.get(renewal.id)
        assert (answered.registry_lookups, answered.face_comparisons) == (1, 1) and answered.face_score > 0.9


def test_the_holder_s_registry_call_is_tried_once_and_the_background_pass_retries(
        ra_database, ra_clock, ra_settings, registry, registry_client):
    from signserver.ra.registry import RegistryClient

    with RegistryClient(registry.url, timeout_seconds=10, attempts=1, backoff_seconds=0) as once:
        workflow = RenewalWorkflow(ra_database, ra_clock, ra_settings, registry=registry_client, certificates=NoCore(),
                                   holder_registry=once)
        renewal = noticed(workflow, ra_database, ra_clock)
        workflow.record_consent(renewal.id)
        registry.state.faults.set(Fault(status=503, times=1))  # the first request fails, a second would not
        assert workflow.check_registry(renewal.id).state is State.WAITING_FOR_REGISTRY
        registry.state.faults.set(Fault(status=503, times=1))
        assert workflow.retry_registry() == 1 and workflow.get(renewal.id).registry_checked_at


# One renewal per certificate

class CoreOpeningMeanwhile:
    """The core's record of a certificate; while it is asked, another RA process opens the same
    renewal."""

    def __init__(self, database, now):
        self.database, self.now = database, now

    def get_certificate(self, serial):
        from types import SimpleNamespace

        opened_renewal(self.database, KUAN, self.now, serial=serial)
        return SimpleNamespace(serial=serial, account=KUAN.account, profile="cloud-signature-government",
                               status="valid", not_after=self.now + datetime.timedelta(days=20))


def test_a_renewal_opened_meanwhile_is_the_one_returned(ra_database, ra_clock, ra_settings, registry_client):
    workflow = RenewalWorkflow(ra_database, ra_clock, ra_settings, registry=registry_client,
                               certificates=CoreOpeningMeanwhile(ra_database, ra_clock.now()))
    opened = workflow.open_renewal("5e1a", "dsaj-operator")
    assert [r.id for r in workflow.renewals()] == [opened.id]


def test_parallel_guesses_are_all_counted(workflow, ra_database, ra_clock):
    """Guesses sent at once (PostgreSQL runs them side by side) take turns on the renewal: no more
    than code_attempts are tried, each counted."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    renewal = noticed(workflow, ra_database, ra_clock)
    address = KUAN.emails[0]
    workflow.send_code(renewal.id, address)
    wrong = wrong_code(ra_database, address)
    start = Barrier(8)

    def guess(_):
        start.wait()
        with pytest.raises(CodeRefused) as refused:
            workflow.verify_code(renewal.id, address, wrong)
        return str(refused.value)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(8)))
    assert answers.count("the code is not the one sent") == 5
    with ra_database.transaction() as conn:
        assert repository.verifications(conn, renewal.id, address)[0].attempts == 5
        assert repository.code_limits_of(conn, renewal.id, address).failures == 5
