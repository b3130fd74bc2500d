"""The operators' refusals on their pages, of a running `signserver ra serve` (a real served core
over mutual TLS): every refusal of the dashboard, the in-person completion, enrolment and search
is said in the operator's language (Traditional Chinese, Portuguese), chosen by its stable reason;
a field too long or with a control character shows its form again with the error on that field
and what was typed (never a secret); a step sent twice is refused on its page."""

from __future__ import annotations

import datetime
import re
import secrets
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.ra.renewal import State
from signserver.ra.store import repository
from tests.ra.conftest import KUAN, opened_renewal
from tests.ra.running import card_csr, create_account, enrol, register
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.web.test_operator_pages import (HOLDER_PASSWORD, LATIN_WORDS, database, operators,  # noqa: F401
                                              refusal_of, settings, signed_in, submission_of, text_of)

ENGLISH = re.compile(r"\b(?:the|is|not|of|Refused)\b")


def foreign_language(text: str, language: str) -> bool:
    """Whether ``text`` is not English: no three Latin words in a row on a Chinese page, none of
    English's commonest words on a Portuguese one."""
    return not (LATIN_WORDS if language == "zh-TW" else ENGLISH).search(text)


def other_holders_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SOMEBODY ELSE")]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def _renewal(database, account: str, state: State, **changes):
    now = datetime.datetime.now(datetime.timezone.utc)
    renewal = opened_renewal(database, replace(KUAN, account=account), now, serial=secrets.token_hex(8))
    with database.transaction() as conn:
        return repository.save_renewal(conn, replace(renewal, state=state, **changes))


def _enrol_form(page, account: str, **fields) -> dict:
    return {"submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
            "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
            "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
            "organisation": "DSAJ", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD, **fields}


@pytest.mark.parametrize("language", ["zh-TW", "pt"])
def test_the_dashboards_in_person_and_enrolment_refusals_are_in_the_operators_language(
        ra_process, operators, core, database, ra_files, language):
    page, _ = signed_in(ra_process, operators, language)
    tag = secrets.token_hex(3)
    revoked = enrol(core, f"web-rv-{tag}", "cloud-signature-government")
    register(ra_process, f"web-rv-{tag}")
    core.revoke_certificate(revoked.serial, "keyCompromise")
    unregistered = enrol(core, f"web-ur-{tag}", "cloud-signature-government")
    twice = enrol(core, f"web-tw-{tag}", "cloud-signature-government")
    register(ra_process, f"web-tw-{tag}")
    page.post("/operator/renewals/confirm", {"serial": twice.serial})
    ra_serial = format(x509.load_pem_x509_certificate((ra_files / "ra.pem").read_bytes()).serial_number, "x")
    over = _renewal(database, f"web-ov-{tag}", State.ACTIVATED)
    unnoticed = _renewal(database, f"web-un-{tag}", State.AWAITING_CONFIRMATION)
    in_person = enrol(core, f"web-ip-{tag}", "qualified-government")
    now = datetime.datetime.now(datetime.timezone.utc)
    at_counter = opened_renewal(database, replace(KUAN, account=f"web-ip-{tag}"), now, profile="qualified-government",
                                serial=in_person.serial, expires=in_person.not_after)
    with database.transaction() as conn:
        repository.save_renewal(conn, replace(at_counter, state=State.AWAITING_IN_PERSON, registry_checked_at=now,
                                              face_score=0.93, application_sha256="ab" * 32))
    counter = f"/operator/renewals/{at_counter.id}/in-person"
    create_account(core, f"web-ex-{tag}")  # a government account

    def dashboard(path, data=None):
        return page.follow(page.post(path, data or {}))

    refused = {
        "revoked": dashboard("/operator/renewals/confirm", {"serial": revoked.serial}),
        "not registered": dashboard("/operator/renewals/confirm", {"serial": unregistered.serial}),
        "confirmed already": dashboard("/operator/renewals/confirm", {"serial": twice.serial}),
        "not a holder's": dashboard("/operator/renewals/confirm", {"serial": ra_serial}),
        "nothing to reopen": dashboard(f"/operator/renewals/{over.id}/reopen-limits"),
        "no notice yet": dashboard(f"/operator/renewals/{unnoticed.id}/resend-notice"),
        "not a CSR": page.post(counter, files={"csr": ("card.csr", b"not a CSR")}),
        "another holder's CSR": page.post(counter, files={"csr": ("card.csr", other_holders_csr())}),
        "not awaiting": page.post(f"/operator/renewals/{unnoticed.id}/in-person",
                                  files={"csr": ("card.csr", card_csr())}),
        "a CSR for a key in the core": page.post("/operator/enrol", _enrol_form(page, f"web-c1-{tag}"),
                                                 files={"csr": ("card.csr", card_csr())}),
        "no CSR for a card": page.post("/operator/enrol", _enrol_form(page, f"web-c2-{tag}",
                                                                      profile="standard-government"),
                                       files={"csr": ("", b"")}),
        "a limit on a standard certificate": page.post("/operator/enrol", _enrol_form(
            page, f"web-c3-{tag}", profile="standard-government", transaction_limit="5000"),
            files={"csr": ("card.csr", card_csr())}),
        "a corporate profile for a government account": page.post("/operator/enrol", _enrol_form(
            page, f"web-ex-{tag}", profile="cloud-signature-corporate", existing_account="yes"),
            files={"csr": ("", b"")}),
        "the certificate refused after the account was made": page.post("/operator/enrol", _enrol_form(
            page, f"web-c4-{tag}", profile="standard-government"), files={"csr": ("card.csr", other_holders_csr())}),
        "an empty search": page.get("/operator/search?q=+"),
    }
    english = []
    for case, response in refused.items():
        said = refusal_of(response)
        assert said, (case, response.status_code, text_of(response)[:400])
        if not foreign_language(said, language):
            english.append(f"{case}: {said!r}")
    assert not english, f"English on a {language} page:\n" + "\n".join(english)
    assert 'id="field-csr-error"' in refused["a CSR for a key in the core"].text
    assert 'id="field-csr-error"' in refused["no CSR for a card"].text
    assert 'id="field-profile-error"' in refused["a limit on a standard certificate"].text


def test_a_renewal_completed_in_person_twice_is_refused_on_its_page(ra_process, operators, core, database):
    """A second click, or the back button and the form sent again, after the completion."""
    page, _ = signed_in(ra_process, operators, "zh-TW")
    account = f"web-ip2-{secrets.token_hex(3)}"
    issued = enrol(core, account, "qualified-government")
    now = datetime.datetime.now(datetime.timezone.utc)
    renewal = opened_renewal(database, replace(KUAN, account=account), now, profile="qualified-government",
                             serial=issued.serial, expires=issued.not_after)
    with database.transaction() as conn:
        repository.save_renewal(conn, replace(renewal, state=State.AWAITING_IN_PERSON, registry_checked_at=now,
                                              face_score=0.93, application_sha256="ab" * 32))
    path = f"/operator/renewals/{renewal.id}/in-person"
    page.get(path)
    assert page.post(path, files={"csr": ("card.csr", card_csr())}).status_code == 200
    again = page.post(path, files={"csr": ("card.csr", card_csr())})
    assert again.status_code == 409 and foreign_language(refusal_of(again), "zh-TW"), refusal_of(again)
    assert len([c for c in core.list_certificates(account) if c.predecessor_serial == issued.serial]) == 1


# --- a field too long, or with a control character --------------------------------------------


def field_error(response, name: str) -> str:
    found = re.search(rf'id="field-{name}-error"><span class="visually-hidden">[^<]*</span>\s*([^<]+)<',
                      response.text)
    return found.group(1).strip() if found else ""


def test_an_overlong_field_is_shown_on_the_unlock_form(ra_process, operators):
    page, _ = signed_in(ra_process, operators, "zh-TW")
    page.get("/operator/unlock")
    long_account = "a" * 300
    shown = page.post("/operator/unlock", {"account": long_account, "recovery_code": "CODE-0000",
                                           "new_password": "P" * 300 + "1", "confirmation": "Second-pass-2"})
    assert shown.status_code == 400 and 'action="/operator/unlock"' in shown.text, text_of(shown)[:300]
    assert field_error(shown, "account") and foreign_language(field_error(shown, "account"), "zh-TW")
    assert field_error(shown, "new_password")
    assert f'value="{long_account}"' in shown.text  # what was typed, to put right
    assert "P" * 300 not in shown.text and "CODE-0000" not in shown.text  # never a secret


def test_a_control_character_is_shown_on_the_enrolment_form(ra_process, operators):
    page, _ = signed_in(ra_process, operators, "en")
    account = f"web-cc-{secrets.token_hex(3)}"
    shown = page.post("/operator/enrol", _enrol_form(page, account, name="KUAN\x01WENG", title="t" * 300,
                                                     revocation_phrase="x" * 300),
                      files={"csr": ("", b"")})
    assert shown.status_code == 400 and 'action="/operator/enrol"' in shown.text, text_of(shown)[:300]
    assert field_error(shown, "name") and field_error(shown, "title") and field_error(shown, "revocation_phrase")
    assert f'value="{account}"' in shown.text and f'value="{KUAN.id_number}"' in shown.text
    assert "x" * 300 not in shown.text and HOLDER_PASSWORD not in shown.text


def test_an_overlong_field_is_shown_on_the_revocation_identity_and_sign_in_forms(ra_process, operators):
    page, _ = signed_in(ra_process, operators, "en")
    page.get("/operator/revoke")
    revoke = page.post("/operator/revoke", {"serial": "0" * 100, "reason": "keyCompromise", "confirmed": "yes",
                                            "account": "kuan-ws", "revocation_phrase": "p" * 300})
    assert revoke.status_code == 400 and field_error(revoke, "serial") and field_error(revoke, "revocation_phrase")
    assert 'value="kuan-ws"' in revoke.text and "p" * 300 not in revoke.text

    identity = page.post("/operator/holders/kuan-ws/identity", {
        "name": "N" * 300, "id_type": KUAN.id_type, "id_number": KUAN.id_number,
        "birth_date": KUAN.birth_date.isoformat(), "emails": KUAN.emails[0]})
    assert identity.status_code == 400 and field_error(identity, "name"), text_of(identity)[:300]
    assert f'value="{KUAN.id_number}"' in identity.text

    confirm = page.follow(page.post("/operator/renewals/confirm", {"serial": "0" * 100}))
    assert confirm.status_code == 200 and "64" in refusal_of(confirm), text_of(confirm)[:300]

    fresh = signed_in(ra_process, operators, "en")[0]
    fresh.get("/operator/unlock")
    too_large = fresh.post(f"/operator/renewals/{'0' * 8}/in-person", files={"csr": ("c.csr", b"x" * 70000)})
    assert too_large.status_code in (404, 413)  # no such renewal: its page is not shown

    sign_in = type(page)(ra_process.base, "en")
    sign_in.get("/operator/sign-in")
    refused = sign_in.post("/operator/sign-in", {"name": "n" * 200, "password": "w" * 300, "otp": "123456"})
    assert refused.status_code == 400 and 'action="/operator/sign-in"' in refused.text, text_of(refused)[:300]
    assert field_error(refused, "name") and field_error(refused, "password") and "w" * 300 not in refused.text


def test_an_overlong_csr_is_shown_on_the_in_person_form(ra_process, operators, database):
    page, _ = signed_in(ra_process, operators, "zh-TW")
    renewal = _renewal(database, f"web-big-{secrets.token_hex(3)}", State.AWAITING_IN_PERSON)
    path = f"/operator/renewals/{renewal.id}/in-person"
    page.get(path)
    shown = page.post(path, files={"csr": ("card.csr", b"x" * (64 * 1024 + 10))})
    assert shown.status_code in (400, 413) and f'action="{path}"' in shown.text, text_of(shown)[:300]
    assert foreign_language(refusal_of(shown), "zh-TW") and refusal_of(shown)


def test_the_cores_password_rules_are_said_on_the_unlock_forms_field(ra_process, operators, core):
    page, _ = signed_in(ra_process, operators, "zh-TW")
    account = f"web-rule-{secrets.token_hex(3)}"
    code = create_account(core, account).recovery_code
    page.get("/operator/unlock")
    refused = page.post("/operator/unlock", {"account": account, "recovery_code": code,
                                             "new_password": f"{account}-9", "confirmation": f"{account}-9"})
    assert refused.status_code == 400 and field_error(refused, "new_password"), refusal_of(refused)
    assert foreign_language(field_error(refused, "new_password"), "zh-TW")
