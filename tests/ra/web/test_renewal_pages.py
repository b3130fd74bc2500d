"""The holder's home, certificates and renewal pages, served by uvicorn on a free loopback port
over the RA's real database, a served core (mutual TLS, the RA as its RA and as its application)
and the reference registry: a cloud-signature renewal from the holder's home to the new
certificate through the forms (CSRF token in each), the refusals of each step shown on its page
in the holder's language, another holder's renewal and certificate refused, and revocation with
the revocation phrase."""

from __future__ import annotations

import re
from dataclasses import replace

import httpx
import pytest

from signserver.ra import renewal as machine
from signserver.ra.help_codes import REVOKE_FIRST
from signserver.ra.operations import RaOperations
from signserver.ra.renewal import State
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.web.app import build_site
from signserver.ra.web.captcha import Captcha
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import load_catalogues
from signserver.ra.web.limits import RateLimits
from signserver.ra.web.rendering import Templates
from signserver.ra.web.sessions import HOLDER, SessionStore
from signserver.ra.workflow import RenewalWorkflow
from signserver.registry_dev.faults import Fault
from tests.conftest import LOOPBACK_TLS
from tests.ra.conftest import (KUAN, START, InlineExecutor, application_signed_in_store, files_not_taken,
                               opened_renewal, photo)
from tests.ra.test_application import (PASSWORD, ExternalEid, core, documents, enrolled, otp_now,  # noqa: F401
                                      ra_state_dir, roots)
from tests.ra.running import Served, password_set
from tests.ra.test_workflow import clear_outbox, code_sent_to

OPERATOR = "dsaj-operator"
OLD_PHRASE = "OldPhrase2024"  # the revocation phrase test_application's enrolled() sets
NEW_PHRASE = "NewPhrase2027"
ENGLISH = {"Accept-Language": "en"}


class Site:
    """The served site and its parts."""

    def __init__(self, running: Served, ctx: WebContext, database):
        self.base = running.url
        self.ctx = ctx
        self.workflow = ctx.workflow
        self.database = database

    def holder(self, account: str, language: dict | None = None, **data) -> "Browser":
        """A client signed in as the holder of ``account`` (via the account unless ``data`` says),
        as the sign-in page signs one in: with the password the core holds for it now (the core's
        account is made first when the core has none, as only an account can sign in)."""
        store = self.ctx.sessions
        session = store.new()
        session.kind, session.subject, session.signed_in_at = HOLDER, account, store.now()
        session.data = {"via": "account", **data}
        if session.data["via"] == "account":
            session.data.setdefault("password_set", password_set(self.ctx.certificates, account))
        token = session.csrf_token
        store.save(session)
        return Browser(self.base, session.session_id, token, language or ENGLISH)


class Browser:
    """An httpx client with a session cookie and that session's CSRF token."""

    def __init__(self, base: str, session_id: str, csrf_token: str, headers: dict):
        self.csrf_token = csrf_token
        self.session_id = session_id
        self.client = httpx.Client(base_url=base, timeout=120, follow_redirects=False,
                                   headers={**headers, "Cookie": f"ra_session={session_id}"}, verify=LOOPBACK_TLS)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, data: dict | None = None, files: dict | None = None) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.csrf_token, **(data or {})}, files=files)


@pytest.fixture(scope="module")
def eid(ca_clock, tmp_path_factory):
    """An external eID whose root the RA trusts for signed uploads."""
    made = ExternalEid(ca_clock.now())
    made.root_path = made.root_file(tmp_path_factory.mktemp("eid"))
    return made


@pytest.fixture
def site(ra_database, ca_clock, registry_client, core, documents, ra_state_dir, eid):  # noqa: F811
    settings = RaSettings(state_dir=ra_state_dir, notice_days=3650, face_threshold=0.8,
                          web_attempts_per_address=1000, web_attempts_per_account=100,
                          application_trust_roots=(eid.root_path,))
    workflow = RenewalWorkflow(ra_database, ca_clock, settings, registry=registry_client, certificates=core,
                               documents=documents, executor=InlineExecutor())
    sessions = SessionStore(ra_database, ca_clock, settings)
    ctx = WebContext(settings=settings, clock=ca_clock, workflow=workflow,
                     operations=RaOperations(ra_database, ca_clock, core), certificates=core,
                     operators=None, sessions=sessions, limits=RateLimits(settings),
                     captcha=Captcha(ca_clock, sessions), templates=Templates.create(load_catalogues()))
    with Served(build_site(ctx)) as running:
        yield Site(running, ctx, ra_database)


def noticed_renewal(site: Site, core, account: str, profile: str = "cloud-signature-government"):  # noqa: F811
    """A holder enrolled in the core with a certificate, registered with the RA, and the
    renewal confirmed (and noticed at once: notice_days covers the validity)."""
    holder, issued = enrolled(core, account, profile)
    site.workflow.register_holder(holder, OPERATOR)
    renewal = site.workflow.confirm_renewal(issued.serial, OPERATOR)
    assert renewal.state is State.AWAITING_IDENTITY
    clear_outbox(site.database)
    return renewal, issued


def page_to(response: httpx.Response, renewal_id: str) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(f"/holder/renewals/{renewal_id}")


def text_of(response: httpx.Response) -> str:
    """The page's text without tags, its spaces folded (for asserting sentences)."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.text).split())


def test_a_cloud_signature_renewal_from_the_holder_home_to_the_new_certificate(site, core, ca_service,  # noqa: F811
                                                                               ca_clock):
    renewal, issued = noticed_renewal(site, core, "web-renew-1")
    holder = site.holder("web-renew-1")
    base = f"/holder/renewals/{renewal.id}"

    home = holder.get("/holder")
    assert home.status_code == 200
    listed = text_of(home)
    assert "Certificates awaiting identity verification (1)" in listed and issued.serial in listed
    assert "No certificate awaits online activation." in listed
    assert f'href="{base}"' in home.text

    # Consent
    page = holder.get(base)
    assert page.status_code == 200 and "Personal data collection statement" in page.text
    refused = holder.post(base + "/consent")
    assert refused.status_code == 422 and "Tick the box to agree" in refused.text
    page_to(holder.post(base + "/consent", {"consent": "yes"}), renewal.id)

    # E-mail codes: each address, a wrong code refused, then the right one
    for index, address in enumerate(KUAN.emails):
        page = holder.get(base)
        assert "Verify the e-mail addresses" in page.text and address in page.text
        page_to(holder.post(base + "/codes", {"address": address}), renewal.id)
        page = holder.get(base)
        assert "The code is valid until" in text_of(page) and 'data-countdown="' in page.text
        assert f'name="code-{index}"' in page.text
        wrong = holder.post(base + "/codes/verify", {"address": address, f"code-{index}": "000000"})
        assert wrong.status_code == 422 and "The code is not the one sent." in wrong.text
        page_to(holder.post(base + "/codes/verify", {"address": address,
                                                     f"code-{index}": code_sent_to(site.database, address)}),
                renewal.id)
    page = holder.get(base)
    assert text_of(page).count("Verified") == len(KUAN.emails) and f'action="{base}/registry"' in page.text

    # The registry's check, then the photo: another face refused, the holder's accepted
    page_to(holder.post(base + "/registry"), renewal.id)
    page = holder.get(base)
    assert "Upload a recent photo" in page.text and 'enctype="multipart/form-data"' in page.text
    other = holder.post(base + "/photo", files={"photo": ("maria.png", photo("maria-silva.png"), "image/png")})
    assert other.status_code == 422 and "The photo does not meet the check&#39;s requirements" in other.text
    page_to(holder.post(base + "/photo", files={"photo": ("me.png", photo("kuan-weng-sam.png"), "image/png")}),
            renewal.id)

    # Review and agreement
    page = holder.get(base)
    assert "Applicant/subscriber agreement and declaration" in page.text and "DSAJ" in page.text
    assert holder.post(base + "/agreement").status_code == 422
    page_to(holder.post(base + "/agreement", {"agree": "yes"}), renewal.id)

    # The application: downloaded, a wrong password refused, then signed with password and OTP
    page = holder.get(base)
    assert "Sign the application documents" in page.text
    document = holder.get(base + "/application.pdf")
    assert document.status_code == 200 and document.content.startswith(b"%PDF-")
    wrong = holder.post(base + "/application/sign", {"password": "Wrong-pass-9", "otp": "000000"})
    assert wrong.status_code == 422 and "password is not right" in wrong.text and "Wrong-pass-9" not in wrong.text
    page_to(holder.post(base + "/application/sign",
                        {"password": PASSWORD, "otp": otp_now(ca_service, ca_clock, "web-renew-1")}), renewal.id)

    # Activation: the phrase typed twice alike, the current password (the account holds a valid certificate)
    page = holder.get(base)
    assert "Activate the certificate" in page.text and 'name="password"' in page.text
    assert 'name="new_password"' not in page.text
    differ = holder.post(base + "/activation", {"password": PASSWORD, "revocation_phrase": NEW_PHRASE,
                                                "revocation_phrase_again": NEW_PHRASE + "x"})
    assert differ.status_code == 422 and "The revocation phrase and its repetition differ." in differ.text
    short = holder.post(base + "/activation", {"password": PASSWORD, "revocation_phrase": "short",
                                               "revocation_phrase_again": "short"})
    assert short.status_code == 422 and "8 to 64 characters" in short.text
    page_to(holder.post(base + "/activation", {"password": "Wrong-pass-9", "revocation_phrase": NEW_PHRASE,
                                               "revocation_phrase_again": NEW_PHRASE}), renewal.id)
    stopped = holder.get(base)  # the activation ran (at once here) and the core refused the password
    assert "Your cloud-signature password is not right." in stopped.text and 'name="password"' in stopped.text
    page_to(holder.post(base + "/activation", {"password": PASSWORD, "revocation_phrase": NEW_PHRASE,
                                               "revocation_phrase_again": NEW_PHRASE}), renewal.id)

    done = site.workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    outcome = holder.get(base)
    assert "Activated successfully" in outcome.text and done.new_serial in outcome.text
    home = text_of(holder.get("/holder"))
    assert "Recent outcomes" in home and done.new_serial in home


def test_the_steps_speak_the_holder_language(site, core):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-lang-1")
    chinese = site.holder("web-lang-1", language={"Accept-Language": "zh-TW"})
    page = chinese.get(f"/holder/renewals/{renewal.id}")
    assert "個人資料收集協定及聲明" in page.text and 'lang="zh-Hant"' in page.text
    refused = chinese.post(f"/holder/renewals/{renewal.id}/consent")
    assert refused.status_code == 422 and "請勾選以同意個人資料收集協定及聲明" in refused.text
    portuguese = site.holder("web-lang-1", language={"Accept-Language": "pt-PT"})
    assert "Declaração de recolha de dados pessoais" in portuguese.get(f"/holder/renewals/{renewal.id}").text
    home = portuguese.get("/holder")
    assert "Certificados a aguardar verificação de identidade" in home.text


def identity_verified_through_pages(site: Site, holder: "Browser", renewal) -> str:
    """Consent, e-mail codes, registry, photo and agreement through the pages; returns the base path."""
    base = f"/holder/renewals/{renewal.id}"
    page_to(holder.post(base + "/consent", {"consent": "yes"}), renewal.id)
    for index, address in enumerate(renewal.emails):
        page_to(holder.post(base + "/codes", {"address": address}), renewal.id)
        page_to(holder.post(base + "/codes/verify", {"address": address,
                                                     f"code-{index}": code_sent_to(site.database, address)}),
                renewal.id)
    page_to(holder.post(base + "/registry"), renewal.id)
    page_to(holder.post(base + "/photo", files={"photo": ("me.jpg", photo("kuan-weng-sam.png"), "image/png")}),
            renewal.id)
    page_to(holder.post(base + "/agreement", {"agree": "yes"}), renewal.id)
    return base


def pdf_signatures(ca_service, account: str) -> int:
    """How many PDFs the core signed for ``account`` (its audit trail's signature.pdf events)."""
    from sqlalchemy import func, select

    from signserver.store.schema import audit_log

    with ca_service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.event == "signature.pdf", audit_log.c.subject == account)).scalar_one()


def test_a_double_clicked_sign_signs_once_and_counts_no_wrong_password(site, core, ca_service,  # noqa: F811
                                                                       ca_clock):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    renewal, _ = noticed_renewal(site, core, "web-sign-twice")
    holder = site.holder("web-sign-twice")
    twin = Browser(site.base, holder.session_id, holder.csrf_token, ENGLISH)  # the same page's second click
    base = identity_verified_through_pages(site, holder, renewal)
    assert holder.get(base + "/application.pdf").status_code == 200
    otp = otp_now(ca_service, ca_clock, "web-sign-twice")
    failed_before = ca_service.accounts.lock_state("web-sign-twice").failed_attempts
    together = threading.Barrier(2)

    def click(browser: Browser) -> httpx.Response:
        together.wait()
        return browser.post(base + "/application/sign", {"password": PASSWORD, "otp": otp})

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(click, (holder, twin)))
    assert sorted(a.status_code for a in answers) == [303, 422], [text_of(a)[:300] for a in answers]
    second = next(a for a in answers if a.status_code == 422)
    assert "not right" not in second.text
    assert ("The application document is being signed" in text_of(second)
            or "This step cannot be done now" in text_of(second)), text_of(second)[:500]  # or signed already
    assert pdf_signatures(ca_service, "web-sign-twice") == 1
    assert ca_service.accounts.lock_state("web-sign-twice").failed_attempts == failed_before
    signed = site.workflow.get(renewal.id)
    assert signed.state is State.AWAITING_ACTIVATION and signed.application_signing_until is None
    with site.database.transaction() as conn:
        actions = [e["action"] for e in repository.audit_entries(conn, renewal.id)]
    assert actions.count("application_signed") == 1 and "application_signing_refused" not in actions


def test_an_in_person_renewal_with_the_application_signed_by_an_eid(site, core, eid):  # noqa: F811
    renewal, issued = noticed_renewal(site, core, "web-eid-1", profile="qualified-government")
    holder = site.holder("web-eid-1")
    base = identity_verified_through_pages(site, holder, renewal)
    page = holder.get(base)
    assert 'action="' + base + '/application/upload"' in page.text
    assert 'action="' + base + '/application/sign"' not in page.text  # no cloud credential to sign with
    document = holder.get(base + "/application.pdf").content

    unsigned = holder.post(base + "/application/upload", files={"signed": ("a.pdf", document, "application/pdf")})
    assert unsigned.status_code == 422 and "The uploaded file is refused" in unsigned.text
    assert holder.post(base + "/application/upload").status_code == 422  # no file chosen

    page_to(holder.post(base + "/application/upload",
                        files={"signed": ("signed.pdf", eid.sign(document), "application/pdf")}), renewal.id)
    outcome = holder.get(base)
    assert "AC-AB-0007" in outcome.text and "book an appointment" in outcome.text
    assert "Certificates awaiting in-person processing (1)" in text_of(holder.get("/holder"))


def test_an_activation_that_sets_a_new_password_ends_the_holder_s_other_sessions(site, core):  # noqa: F811
    renewal, issued = noticed_renewal(site, core, "web-new-pass-1")
    holder, elsewhere = site.holder("web-new-pass-1"), site.holder("web-new-pass-1")  # a thief's, say
    base = identity_verified_through_pages(site, holder, renewal)
    application_signed_in_store(site.database, renewal.id)
    core.revoke_certificate(issued.serial, "superseded", revocation_phrase=OLD_PHRASE, account="web-new-pass-1")
    assert 'name="new_password"' in holder.get(base).text  # the account holds no valid certificate
    assert elsewhere.get("/holder").status_code == 200
    page_to(holder.post(base + "/activation", {"new_password": "New-pass-2027", "confirmation": "New-pass-2027",
                                               "revocation_phrase": NEW_PHRASE,
                                               "revocation_phrase_again": NEW_PHRASE}), renewal.id)
    done = site.workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    ended = elsewhere.get("/holder")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")
    outcome = holder.get(base)  # the session that set the password follows the activation to its end
    assert outcome.status_code == 200 and "Activated successfully" in outcome.text


def test_another_holder_renewal_is_not_found(site, core, ca_clock):  # noqa: F811
    renewal, issued = noticed_renewal(site, core, "web-own-1")
    other = site.holder("web-own-2")
    base = f"/holder/renewals/{renewal.id}"
    assert other.get(base).status_code == 404
    assert other.post(base + "/consent", {"consent": "yes"}).status_code == 404
    assert other.get(base + "/application.pdf").status_code == 404
    assert other.get(f"/holder/renewals/{'0' * 32}").status_code == 404
    assert issued.serial not in other.get("/holder").text
    assert site.workflow.get(renewal.id).consent_at is None

    # A notice link's session acts only on its own renewal(s).
    second = site.workflow.confirm_renewal(core.issue_certificate("web-own-1", "cloud-signature-government").serial,
                                           OPERATOR)
    by_notice = site.holder("web-own-1", via="notice", renewals=[second.id])
    assert by_notice.get(base).status_code == 404
    assert by_notice.get(f"/holder/renewals/{second.id}").status_code == 200
    assert issued.serial not in by_notice.get("/holder").text

    anonymous = httpx.get(site.base + base, follow_redirects=False, timeout=60, verify=LOOPBACK_TLS)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/sign-in?next=")


def test_a_form_without_the_csrf_token_is_refused(site, core):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-csrf-1")
    holder = site.holder("web-csrf-1")
    refused = holder.client.post(f"/holder/renewals/{renewal.id}/consent", data={"consent": "yes"})
    assert refused.status_code == 403
    assert site.workflow.get(renewal.id).consent_at is None


def test_revocation_with_the_revocation_phrase(site, core):  # noqa: F811
    holder_data, issued = enrolled(core, "web-revoke-1")
    _, others = enrolled(core, "web-revoke-2")
    holder = site.holder("web-revoke-1")
    home = holder.get("/holder")
    assert f'/holder/certificates/{issued.serial}/revoke' in home.text
    path = f"/holder/certificates/{issued.serial}/revoke"
    page = holder.get(path)
    assert page.status_code == 200 and "Revocation cannot be undone." in page.text

    assert holder.get(f"/holder/certificates/{others.serial}/revoke").status_code == 404
    assert holder.post(f"/holder/certificates/{others.serial}/revoke",
                       {"revocation_phrase": OLD_PHRASE, "understood": "yes"}).status_code == 404
    assert holder.get("/holder/certificates/ffff0000/revoke").status_code == 404

    unconfirmed = holder.post(path, {"revocation_phrase": OLD_PHRASE})
    assert unconfirmed.status_code == 422 and "Confirm that you understand" in unconfirmed.text
    wrong = holder.post(path, {"revocation_phrase": "NotThePhrase1", "understood": "yes"})
    assert wrong.status_code == 422 and "The revocation phrase is not right." in wrong.text
    assert re.search(r'<input type="checkbox" id="field-understood"[^>]* checked', wrong.text)  # kept as ticked
    assert "NotThePhrase1" not in wrong.text
    assert core.get_certificate(issued.serial).status == "valid"

    done = holder.post(path, {"revocation_phrase": OLD_PHRASE, "understood": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/holder"
    assert core.get_certificate(issued.serial).status == "revoked"
    assert core.get_certificate(others.serial).status == "valid"
    home = text_of(holder.get("/holder"))
    assert f"Certificate {issued.serial} is revoked." in home and "revoked" in home


def test_an_overlong_revocation_phrase_is_said_on_its_field(site, core):  # noqa: F811
    _, issued = enrolled(core, "web-revoke-long")
    holder = site.holder("web-revoke-long", {"Accept-Language": "zh-TW"})
    path = f"/holder/certificates/{issued.serial}/revoke"
    holder.get(path)
    for phrase, problem in (("p" * 300, "最多 256 個字元。"), ("Old\x07Phrase", "此欄不可包含控制字元（例如定位字元或換行）。")):
        shown = holder.post(path, {"revocation_phrase": phrase, "understood": "yes"})
        assert shown.status_code == 422 and f'action="{path}"' in shown.text, text_of(shown)[:300]
        assert re.search(r'id="field-revocation_phrase-error"><span[^>]*>[^<]*</span>\s*' + re.escape(problem),
                         shown.text), text_of(shown)[:300]
        assert re.search(r'<input type="checkbox" id="field-understood"[^>]* checked', shown.text)  # kept
        assert "p" * 300 not in shown.text and "Phrase" not in shown.text
    assert core.get_certificate(issued.serial).status == "valid"


def consented_and_verified(site, renewal) -> None:
    """The renewal's consent recorded and each of its addresses verified, as the holder would."""
    site.workflow.record_consent(renewal.id)
    for address in renewal.emails:
        site.workflow.send_code(renewal.id, address)
        site.workflow.verify_code(renewal.id, address, code_sent_to(site.database, address))


def test_the_registry_unavailable_is_a_waiting_page(site, core, registry):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-wait-1")
    consented_and_verified(site, renewal)
    holder = site.holder("web-wait-1")
    registry.state.faults.set(Fault(status=503))
    try:
        page_to(holder.post(f"/holder/renewals/{renewal.id}/registry"), renewal.id)
        waiting = holder.get(f"/holder/renewals/{renewal.id}")
        assert "Waiting for the identity registry to answer" in waiting.text
        assert '<noscript><meta http-equiv="refresh"' in waiting.text and "data-poll=" in waiting.text
    finally:
        registry.state.faults.clear()
    page_to(holder.post(f"/holder/renewals/{renewal.id}/registry"), renewal.id)
    assert "Upload a recent photo" in holder.get(f"/holder/renewals/{renewal.id}").text


def test_try_again_while_the_registry_is_down_uses_up_no_lookup(site, core, registry):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-wait-2")
    consented_and_verified(site, renewal)
    holder = site.holder("web-wait-2")
    base = f"/holder/renewals/{renewal.id}"
    registry.state.faults.set(Fault(status=503))
    try:
        for _ in range(site.ctx.settings.registry_lookups):  # the check, then "Try again" on the waiting page
            page_to(holder.post(base + "/registry"), renewal.id)
            assert "Waiting for the identity registry to answer" in holder.get(base).text
    finally:
        registry.state.faults.clear()
    page_to(holder.post(base + "/registry"), renewal.id)  # the registry answers: the holder goes on
    assert "Upload a recent photo" in holder.get(base).text
    assert site.workflow.get(renewal.id).registry_lookups == 1  # the one lookup answered


def test_a_photo_is_told_by_its_content_and_none_checked_uses_up_a_comparison(site, core, registry):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-photo-1")
    consented_and_verified(site, renewal)
    site.workflow.check_registry(renewal.id)
    holder = site.holder("web-photo-1")
    base = f"/holder/renewals/{renewal.id}"
    me = photo("kuan-weng-sam.png")
    not_taken = files_not_taken()
    assert len(not_taken) == site.ctx.settings.face_comparisons
    for name, content, declared in not_taken:
        refused = holder.post(base + "/photo", files={"photo": (name, content, declared)})
        assert refused.status_code == 422 and "The photo cannot be used: choose a JPG, JPEG, PNG or TIFF file" in \
            text_of(refused), name
        assert site.workflow.get(renewal.id).face_comparisons == 0, name
    registry.state.faults.set(Fault(status=502))
    try:  # the face service does not answer: the renewal waits, and the photo is sent again
        page_to(holder.post(base + "/photo", files={"photo": ("me.png", me, "image/png")}), renewal.id)
        assert "did not answer when your photo was sent" in holder.get(base).text
    finally:
        registry.state.faults.clear()
    assert site.workflow.get(renewal.id).face_comparisons == 0
    # A PNG a phone names photo.jpg, and a browser declares image/jpeg, is a PNG
    page_to(holder.post(base + "/photo", files={"photo": ("photo.jpg", me, "image/jpeg")}), renewal.id)
    done = site.workflow.get(renewal.id)
    assert done.face_score > 0.9 and done.face_comparisons == 1
    assert "Applicant/subscriber agreement and declaration" in holder.get(base).text


def in_state(site: Site, renewal, *moves):
    with site.database.transaction() as conn:
        current = repository.get_renewal(conn, renewal.id)
        for move in moves:
            current = move(current)
        return repository.save_renewal(conn, current)


def test_progress_outcomes_and_help_codes(site, ca_clock):
    now = ca_clock.now()
    holder = replace(KUAN, account="web-codes-1")
    activating = opened_renewal(site.database, holder, now, serial="5e1a01")
    in_state(site, activating, lambda r: machine.confirm(r, OPERATOR, now),
             lambda r: machine.give_notice(r, now, token_hash="x"))
    renewal_steps = site.workflow
    renewal_steps.record_consent(activating.id)
    with site.database.transaction() as conn:
        current = repository.get_renewal(conn, activating.id)
        repository.save_renewal(conn, replace(current, state=State.AWAITING_APPLICATION, agreement_at=now,
                                              registry_checked_at=now, face_score=0.9))
    application_signed_in_store(site.database, activating.id)
    in_state(site, activating, lambda r: machine.start_activation(r, "ref", now))
    browser = site.holder("web-codes-1")
    progress = browser.get(f"/holder/renewals/{activating.id}")
    assert "Activating the certificate" in progress.text and 'http-equiv="refresh"' in progress.text
    state = browser.get(f"/holder/renewals/{activating.id}/state")
    assert state.json() == {"state": "activating"}

    # The activation stopped for AC-AB-0015: its guidance and the way to the revocation page
    in_state(site, activating, lambda r: machine.activation_stopped(r, "revoke first", now, REVOKE_FIRST))
    stopped = browser.get(f"/holder/renewals/{activating.id}")
    assert "AC-AB-0015" in stopped.text and "revoke the original certificate first" in stopped.text
    assert "/holder/certificates/5e1a01/revoke" in stopped.text
    # The account holds no valid certificate (none in the core): a new password, typed twice
    assert 'name="new_password"' in stopped.text and 'name="confirmation"' in stopped.text
    assert 'name="password"' not in stopped.text
    differ = browser.post(f"/holder/renewals/{activating.id}/activation", {
        "new_password": "New-pass-2027", "confirmation": "New-pass-2028", "revocation_phrase": NEW_PHRASE,
        "revocation_phrase_again": NEW_PHRASE})
    assert differ.status_code == 422 and "The new password and its confirmation differ." in differ.text
    assert 'id="field-confirmation-error"' in differ.text
    weak = browser.post(f"/holder/renewals/{activating.id}/activation", {
        "new_password": "abcdefgh", "confirmation": "abcdefgh", "revocation_phrase": NEW_PHRASE,
        "revocation_phrase_again": NEW_PHRASE})  # the documents' rules: a letter and a non-letter
    assert weak.status_code == 422 and "needs at least one character that is not a letter" in weak.text
    assert 'id="field-new_password-error"' in weak.text and "abcdefgh" not in weak.text

    # An in-person type: AC-AB-0007 and the appointment
    in_person = opened_renewal(site.database, holder, now, profile="qualified-government", serial="5e1a02")
    in_state(site, in_person, lambda r: machine.confirm(r, OPERATOR, now),
             lambda r: machine.give_notice(r, now, token_hash="y"),
             lambda r: replace(r, state=State.AWAITING_APPLICATION, consent_at=now, agreement_at=now,
                               registry_checked_at=now, face_score=0.9))
    application_signed_in_store(site.database, in_person.id)
    outcome = browser.get(f"/holder/renewals/{in_person.id}")
    assert "AC-AB-0007" in outcome.text and "book an appointment" in outcome.text
    home = text_of(browser.get("/holder"))
    assert "Certificates awaiting in-person processing (1)" in home
    assert "Certificates awaiting online activation (1)" in home


def test_garbage_never_makes_a_server_error(site, core):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-junk-1")
    holder = site.holder("web-junk-1")
    base = f"/holder/renewals/{renewal.id}"
    for path in ("/consent", "/codes", "/codes/verify", "/registry", "/photo", "/agreement", "/application/sign",
                 "/application/upload", "/activation"):
        for body in ("address=%00", "address=" + "x" * 5000, "address=kuan%40example.mo&code=%ED%A0%80",
                     "password=%FF%FE&revocation_phrase=%C0", "consent=yes&consent=no", ""):
            answer = holder.client.post(base + path, content=f"csrf_token={holder.csrf_token}&{body}".encode(),
                                        headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert answer.status_code < 500, (path, body, answer.status_code)
        binary = holder.client.post(base + path, content=b"\xff\xfe" * 100,
                                    headers={"Content-Type": "multipart/form-data; boundary=x",
                                             "X-CSRF-Token": holder.csrf_token})
        assert binary.status_code < 500, (path, binary.status_code)
    assert holder.get(f"/holder/certificates/{'z' * 300}/revoke").status_code == 404


def last_seen(site: Site, browser: Browser) -> int:
    return site.ctx.sessions.load(browser.session_id).last_seen


def test_the_progress_poll_does_not_keep_the_session_alive(site, core, ca_clock):  # noqa: F811
    renewal, _ = noticed_renewal(site, core, "web-poll-1")
    holder = site.holder("web-poll-1")
    base = f"/holder/renewals/{renewal.id}"
    assert holder.get(base).status_code == 200
    seen = last_seen(site, holder)
    ca_clock.advance(seconds=60)
    polled = holder.get(base + "/state")
    assert polled.status_code == 200 and polled.json() == {"state": "awaiting_identity"}
    assert last_seen(site, holder) == seen  # a script's poll is not the holder's use
    assert holder.get(base).status_code == 200
    assert last_seen(site, holder) == seen + 60  # a page is


def _request(language: str):
    """A request as a page handler gets it, in ``language``, for the texts' functions."""
    from types import SimpleNamespace

    from starlette.requests import Request

    context = SimpleNamespace(templates=Templates.create(load_catalogues()), settings=RaSettings())
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [
        (b"accept-language", language.encode())], "app": SimpleNamespace(state=SimpleNamespace(web_context=context))})


def test_refusals_are_told_by_their_reason_not_their_words():
    from signserver.ra import errors
    from signserver.ra.web.renewal_pages import refusal_text

    english = _request("en")
    cases = [
        (errors.CodeRefused("a code was sent less than 60 seconds ago", "expired"),
         "The code has expired: ask for a new one."),
        (errors.CodeRefused("the code has expired", "wrong"), "The code is not the one sent."),
        (errors.StepRefused("the password is wrong", reason="photo_mismatch"),
         "The photo does not meet the check's requirements; please take another photo."),
        (errors.StepRefused("a password has at least 8 characters", reason="no_letter"),
         "The new password needs at least one letter."),
        (errors.ApplicationRefused("the account is locked", reason="authentication"),
         "The cloud-signature password or the one-time password is not right."),
        (errors.ApplicationRefused("the password is not right", reason="locked"),
         "More than 5 times have been tried, please try again 30 minutes later."),
        (errors.StepRefused("revocation phrase, password, not verified"),
         "This step cannot be done now: the page shows where the renewal is."),
    ]
    for refusal, text in cases:
        assert refusal_text(english, refusal) == text, refusal
    assert refusal_text(_request("zh-TW"), errors.ApplicationRefused("x", reason="locked")) == \
        "已嘗試超過 5 次，請於 30 分鐘後再試。"


def test_a_stopped_activation_is_told_by_its_reason_not_its_words():
    from signserver.ra.web.renewal_pages import stopped_activation_text

    activating = machine.start_activation(replace(
        machine.open_renewal("r-stopped", serial="5e1a09", account=KUAN.account, profile="cloud-signature-government",
                             expires=START, holder=KUAN, now=START), state=State.AWAITING_ACTIVATION), "ref", START)
    english = _request("en")
    cases = [
        ("the certificate service said no (credentials)", "AUTHENTICATION_FAILED",
         "Your cloud-signature password is not right."),
        ("the password was fine; the registry timed out", "registry_unavailable",
         "The identity registry does not answer now; activate again later."),
        ("too many tries", "ACCOUNT_LOCKED", "More than 5 times have been tried, please try again 30 minutes later."),
        ("no answer from the core", "core_unavailable", "The certificate service does not answer now; try again "
                                                       "later."),
        ("the password is locked in the registry", "", "The activation did not complete; activate again."),
        ("the core's own password rule", "common",
         "The new password is too common and easy to guess; choose another."),
    ]
    for refusal, reason, text in cases:
        stopped = machine.activation_stopped(activating, refusal, START, reason=reason)
        assert stopped.refusal_reason == reason
        assert stopped_activation_text(english, stopped) == text, (refusal, reason)
    assert stopped_activation_text(english, activating) == ""
    # An earlier AC-AB-0014, done again since, is not why this activation stopped
    changed = replace(machine.identity_changed(activating, ["name"], START), state=State.AWAITING_ACTIVATION,
                      help_code="")
    assert stopped_activation_text(english, changed) == ""
    wrong = machine.activation_stopped(activating, "x", START, reason="AUTHENTICATION_FAILED")
    assert stopped_activation_text(_request("zh-TW"), wrong) == "台端之雲簽簽名密碼（存取碼）不正確。"


def test_an_overlong_secret_is_shown_on_the_activation_step(site, ca_clock):
    """A password or revocation phrase past its length is said on its field, on the step's page
    (never put back), rather than on an error page that loses the step."""
    now = ca_clock.now()
    holder = replace(KUAN, account="web-long-1")
    renewal = opened_renewal(site.database, holder, now, serial="5e1a11")
    in_state(site, renewal, lambda r: machine.confirm(r, OPERATOR, now),
             lambda r: machine.give_notice(r, now, token_hash="z"),
             lambda r: replace(r, state=State.AWAITING_APPLICATION, consent_at=now, agreement_at=now,
                               registry_checked_at=now, face_score=0.9))
    application_signed_in_store(site.database, renewal.id)
    browser = site.holder("web-long-1")
    browser.get(f"/holder/renewals/{renewal.id}")
    long = "Long-pass-1" + "x" * 300
    shown = browser.post(f"/holder/renewals/{renewal.id}/activation", {
        "new_password": long, "confirmation": long, "revocation_phrase": NEW_PHRASE,
        "revocation_phrase_again": "P\x01" + NEW_PHRASE})
    assert shown.status_code == 422 and f'action="/holder/renewals/{renewal.id}/activation"' in shown.text
    assert 'id="field-new_password-error"' in shown.text and 'id="field-revocation_phrase_again-error"' in shown.text
    assert long not in shown.text and NEW_PHRASE not in shown.text
    signing = site.holder("web-long-1")
    in_state(site, renewal, lambda r: replace(r, state=State.AWAITING_APPLICATION, application_sha256=""))
    signed = signing.post(f"/holder/renewals/{renewal.id}/application/sign", {"password": long, "otp": "123456"})
    assert signed.status_code == 422 and 'id="field-password-error"' in signed.text and long not in signed.text
