"""The renewal state machine alone (pure domain, time passed in): its transitions and refusals."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from signserver.ra import renewal as machine
from signserver.ra.errors import StepRefused
from signserver.ra.registry import IdentityRecord
from signserver.ra.renewal import State, Step
from tests.ra.conftest import KUAN, START

DAY = datetime.timedelta(days=1)
SIGNED = "ab" * 32  # a signed application's SHA-256
TOKEN_HASH = "cd" * 32  # a holder token's SHA-256


def agreed_and_signed(renewal, now=START):
    """The agreement accepted and the application document signed."""
    return machine.application_signed(machine.accept_agreement(renewal, [], now), SIGNED, now)


def opened(profile: str = "cloud-signature-government", expires_in_days: int = 45):
    return machine.open_renewal("r1", serial="0a1b", account=KUAN.account, profile=profile,
                                expires=START + expires_in_days * DAY, holder=KUAN, now=START)


def verified(profile: str = "cloud-signature-government"):
    """A renewal whose identity steps are all done but the agreement."""
    r = machine.give_notice(machine.confirm(opened(profile), "dsaj-operator", START), START, token_hash=TOKEN_HASH)
    r = machine.record_consent(r, "consent-1", START)
    r = machine.registry_matched(r, START)
    return machine.face_compared(r, 0.93, 0.8, START)


def record(**changes) -> IdentityRecord:
    base = IdentityRecord(KUAN.id_type, KUAN.id_number, KUAN.name, "Weng Sam Luzia", "Kuan", KUAN.birth_date,
                          datetime.date(2032, 6, 30), "MO")
    return replace(base, **changes)


def test_a_cloud_signature_renewal_goes_through_every_state():
    r = opened()
    assert r.state is State.AWAITING_CONFIRMATION and r.emails == KUAN.emails and r.subject_name == KUAN.name
    r = machine.confirm(r, "dsaj-operator", START)
    assert r.state is State.CONFIRMED and r.confirmed_by == "dsaj-operator"
    r = machine.give_notice(r, START, token_hash=TOKEN_HASH)
    assert r.state is State.AWAITING_IDENTITY and r.notice_sent_at == START
    r = machine.accept_agreement(verified(), [], START + DAY)
    assert r.state is State.AWAITING_APPLICATION and r.agreement_at == START + DAY and not r.help_code
    with pytest.raises(StepRefused):
        machine.start_activation(r, "ref-0", START + DAY)
    with pytest.raises(StepRefused):
        machine.application_signed(r, "not a digest", START + DAY)
    r = machine.application_signed(r, SIGNED, START + DAY)
    assert r.state is State.AWAITING_ACTIVATION and r.application_sha256 == SIGNED
    with pytest.raises(StepRefused):
        machine.application_signed(r, SIGNED, START + DAY)
    r = machine.start_activation(r, "ref-1", START + DAY)
    assert r.state is State.ACTIVATING and r.activation_reference == "ref-1"
    r = machine.activated(r, "0c2d", START + 1096 * DAY, START + DAY)
    assert r.state is State.ACTIVATED and r.new_serial == "0c2d" and r.final


@pytest.mark.parametrize("profile", ["qualified-government", "standard-corporate", "encryption-government"])
def test_other_types_go_to_the_in_person_queue_with_help_code_0007(profile):
    r = agreed_and_signed(verified(profile))
    assert r.state is State.AWAITING_IN_PERSON and r.help_code == "AC-AB-0007"
    with pytest.raises(StepRefused) as refused:
        machine.start_activation(r, "ref", START)
    assert refused.value.help_code == "AC-AB-0007"
    done = machine.complete_in_person(r, "counter-3", START)
    assert done.state is State.COMPLETED_IN_PERSON and done.final


def test_steps_out_of_order_are_refused_clearly():
    with pytest.raises(StepRefused, match="awaiting_confirmation"):
        machine.give_notice(opened(), START, token_hash=TOKEN_HASH)
    confirmed = machine.confirm(opened(), "op", START)
    with pytest.raises(StepRefused, match="confirmed, not awaiting_identity"):
        machine.record_consent(confirmed, "c", START)
    with pytest.raises(StepRefused):
        machine.confirm(confirmed, "op", START)
    awaiting = machine.give_notice(confirmed, START, token_hash=TOKEN_HASH)
    with pytest.raises(StepRefused, match="consent"):
        machine.registry_matched(awaiting, START)
    with pytest.raises(StepRefused, match="registry"):
        machine.face_compared(machine.record_consent(awaiting, "c", START), 0.99, 0.8, START)
    with pytest.raises(StepRefused, match="photo"):
        machine.accept_agreement(machine.registry_matched(machine.record_consent(awaiting, "c", START), START),
                                 [], START)
    with pytest.raises(StepRefused, match="kuan@example.mo"):
        machine.accept_agreement(verified(), ["kuan@example.mo"], START)
    with pytest.raises(StepRefused):
        machine.start_activation(verified(), "ref", START)  # the agreement first
    with pytest.raises(StepRefused):
        machine.complete_in_person(verified("qualified-government"), "op", START)
    with pytest.raises(StepRefused, match="operator"):
        machine.confirm(opened(), "", START)


def _consented():
    return machine.record_consent(machine.give_notice(machine.confirm(opened(), "op", START), START,
                                                      token_hash=TOKEN_HASH), "c", START)


@pytest.mark.parametrize("step", [
    lambda: machine.give_notice(opened(), START, token_hash=TOKEN_HASH),
    lambda: machine.record_consent(machine.confirm(opened(), "op", START), "c", START),
    lambda: machine.confirm(machine.confirm(opened(), "op", START), "op", START),
    lambda: machine.registry_matched(machine.give_notice(machine.confirm(opened(), "op", START), START,
                                                         token_hash=TOKEN_HASH), START),
    lambda: machine.before_registry_match(machine.registry_waiting(_consented(), Step.FACE, START)),
    lambda: machine.face_compared(_consented(), 0.99, 0.8, START),
    lambda: machine.before_face(machine.registry_waiting(_consented(), Step.REGISTRY_MATCH, START)),
    lambda: machine.accept_agreement(_consented(), [], START),
    lambda: machine.accept_agreement(machine.registry_matched(_consented(), START), [], START),
    lambda: machine.start_activation(verified(), "ref", START),
    lambda: machine.activated(agreed_and_signed(verified()), "0c2d", START, START),
    lambda: machine.activation_stopped(agreed_and_signed(verified()), "no", START),
    lambda: machine.complete_in_person(verified("qualified-government"), "op", START),
    lambda: machine.application_signed(verified(), SIGNED, START),
], ids=["notice", "consent", "confirm", "registry", "registry-while-face", "face", "face-while-registry",
        "agreement-before-registry", "agreement-before-face", "activation", "activated", "stopped",
        "in-person", "application"])
def test_a_step_out_of_order_says_so_in_its_reason(step):
    with pytest.raises(StepRefused) as refused:
        step()
    assert refused.value.reason == "out_of_order", refused.value


def test_a_new_notice_before_the_first_or_after_the_end_says_there_is_none_to_send_again():
    for renewal in (machine.confirm(opened(), "op", START),
                    machine.activated(machine.start_activation(agreed_and_signed(verified()), "ref", START),
                                      "0c2d", START, START)):
        with pytest.raises(StepRefused) as refused:
            machine.new_holder_token(renewal, TOKEN_HASH, START)
        assert refused.value.reason == "no_notice"


def test_the_notice_is_due_notice_days_before_expiry_once_confirmed():
    r = opened(expires_in_days=45)
    assert not machine.notice_due(r, START + 20 * DAY, 30)  # not confirmed
    r = machine.confirm(r, "op", START)
    assert not machine.notice_due(r, START + 14 * DAY, 30)
    assert machine.notice_due(r, START + 15 * DAY, 30)
    noticed = machine.give_notice(r, START + 15 * DAY, token_hash=TOKEN_HASH)
    assert not machine.notice_due(noticed, START + 16 * DAY, 30)


def test_a_face_below_the_threshold_is_refused_and_changes_nothing():
    r = machine.registry_matched(machine.record_consent(
        machine.give_notice(machine.confirm(opened(), "op", START), START, token_hash=TOKEN_HASH), "c", START), START)
    with pytest.raises(StepRefused, match="photo"):
        machine.face_compared(r, 0.79, 0.8, START)
    assert machine.face_compared(r, 0.8, 0.8, START).face_score == 0.8


def test_the_registry_down_makes_the_renewal_wait_and_resume_the_same_step():
    r = machine.record_consent(machine.give_notice(machine.confirm(opened(), "op", START), START,
                                                   token_hash=TOKEN_HASH), "c", START)
    waiting = machine.registry_waiting(r, Step.REGISTRY_MATCH, START)
    assert waiting.state is State.WAITING_FOR_REGISTRY and waiting.resume_step == "registry_match"
    with pytest.raises(StepRefused, match="match"):
        machine.face_compared(waiting, 0.99, 0.8, START)
    resumed = machine.registry_matched(waiting, START + DAY)
    assert resumed.state is State.AWAITING_IDENTITY and resumed.consent_at == START and not resumed.resume_step


def test_identity_differences_name_what_changed():
    today = datetime.date(2026, 12, 1)
    assert machine.identity_differences(record(), KUAN, today) == []
    assert machine.identity_differences(record(name="kuan  weng sam luzia"), KUAN, today) == []
    assert machine.identity_differences(record(name="KUAN WENG SAM"), KUAN, today) == ["name"]
    assert machine.identity_differences(record(birth_date=datetime.date(1985, 3, 15)), KUAN, today) == ["birth date"]
    assert machine.identity_differences(record(expires=datetime.date(2026, 11, 30)), KUAN, today) == \
        ["expired document"]


def test_identity_changed_0014_asks_every_identity_step_again():
    r = machine.start_activation(agreed_and_signed(verified()), "ref", START)
    again = machine.identity_changed(r, ["expired document"], START + DAY)
    assert again.state is State.AWAITING_IDENTITY and again.help_code == "AC-AB-0014"
    assert not again.application_sha256  # the application is signed again
    assert (again.consent_at, again.registry_checked_at, again.face_score, again.agreement_at) == (None,) * 4
    assert "expired document" in again.refusal and not again.activation_reference


def test_a_stopped_activation_may_be_tried_again():
    r = machine.start_activation(agreed_and_signed(verified()), "ref", START)
    stopped = machine.activation_stopped(r, "revoke first", START, help_code="AC-AB-0015")
    assert stopped.state is State.AWAITING_ACTIVATION and stopped.help_code == "AC-AB-0015"
    assert machine.start_activation(stopped, "ref-2", START).state is State.ACTIVATING


@pytest.mark.parametrize("phrase, good", [("abcd1234", True), ("A" * 64, True), ("abc1234", False), ("A" * 65, False),
                                          ("abcd 1234", False), ("abcd-1234", False), ("", False)])
def test_the_revocation_phrase_is_8_to_64_letters_and_digits(phrase, good):
    if good:
        machine.check_revocation_phrase(phrase)
    else:
        with pytest.raises(StepRefused):
            machine.check_revocation_phrase(phrase)


@pytest.mark.parametrize("password, good", [("abcdefg1", True), ("abc-defg", True), ("abcdefgh", False),
                                            ("12345678", False), ("abc1", False)])
def test_a_new_password_follows_the_documents_rules(password, good):
    if good:
        machine.check_new_password(password, password)
    else:
        with pytest.raises(StepRefused) as refused:
            machine.check_new_password(password, password)
        assert password not in str(refused.value)
    with pytest.raises(StepRefused, match="confirmation"):
        machine.check_new_password("abcdefg1", "abcdefg2")


def test_the_holder_token_holds_past_the_old_certificate_by_a_grace_and_while_the_renewal_is_under_way():
    confirmed = machine.confirm(opened(expires_in_days=20), "op", START)
    assert not machine.holder_may_call(confirmed, True, START)  # no notice, no token
    noticed = machine.give_notice(confirmed, START, token_hash=TOKEN_HASH)
    end = START + 20 * DAY + machine.HOLDER_TOKEN_GRACE
    assert noticed.holder_token_hash == TOKEN_HASH and noticed.holder_token_expires == end
    # The old certificate expired, the renewal goes on (the core renews an expired certificate).
    assert machine.holder_may_call(noticed, True, START + 21 * DAY)
    assert machine.holder_may_call(noticed, True, end - datetime.timedelta(seconds=1))
    assert not machine.holder_may_call(noticed, False, START)
    assert not machine.holder_may_call(noticed, True, end)
    refused = machine.refuse(noticed, "renew in person", START)
    assert not machine.holder_may_call(refused, True, START)
    assert machine.holder_may_call(refused, True, START, reading=True)
    assert TOKEN_HASH not in repr(noticed)


def test_a_token_given_after_the_old_certificate_expired_still_holds_for_the_grace():
    noticed = machine.give_notice(machine.confirm(opened(expires_in_days=20), "op", START), START,
                                  token_hash=TOKEN_HASH)
    later = START + 25 * DAY  # the old certificate expired 5 days ago; the holder lost the notice
    resent = machine.new_holder_token(noticed, "ef" * 32, later)
    assert resent.holder_token_expires == later + machine.HOLDER_TOKEN_GRACE
    assert machine.holder_may_call(resent, True, later + DAY)


def test_a_new_holder_token_replaces_the_one_before_only_for_a_renewal_under_way():
    confirmed = machine.confirm(opened(), "op", START)
    with pytest.raises(StepRefused, match="notice"):
        machine.new_holder_token(confirmed, TOKEN_HASH, START)
    noticed = machine.give_notice(confirmed, START, token_hash=TOKEN_HASH)
    assert machine.new_holder_token(noticed, "ef" * 32, START + DAY).holder_token_hash == "ef" * 32
    with pytest.raises(StepRefused):
        machine.new_holder_token(machine.refuse(noticed, "in person", START), "ef" * 32, START)
