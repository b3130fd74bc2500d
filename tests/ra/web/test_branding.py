"""The provider's and the service's names are settings: with none set, the pages, the help codes'
guidance and the e-mails name no real provider but each language's neutral default; a set name is
shown as given, in every language, in the review page's declaration, the help codes' guidance,
the header and title, and the e-mails' sender and sign-off."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from signserver.ra import branding
from signserver.ra import renewal as machine
from signserver.ra.errors import SettingsError
from signserver.ra.mailer import OutboxMailer
from signserver.ra.operations import RaOperations
from signserver.ra.renewal import State
from signserver.ra.settings import RaSettings, load_settings
from signserver.ra.web.app import build_site
from signserver.ra.web.captcha import Captcha
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import load_catalogues
from signserver.ra.web.limits import RateLimits
from signserver.ra.web.rendering import Templates
from signserver.ra.web.sessions import SessionStore
from signserver.ra.workflow import RenewalWorkflow
from tests.conftest import Inbox, smtp_on_loopback
from tests.ra.conftest import KUAN, InlineExecutor, application_signed_in_store, opened_renewal, photo
from tests.ra.test_application import core, documents, enrolled, ra_state_dir, roots  # noqa: F401 (fixtures)
from tests.ra.running import Served
from tests.ra.test_workflow import clear_outbox, code_sent_to
from tests.ra.web.test_renewal_pages import (OPERATOR, Site, eid, in_state,  # noqa: F401 (fixtures)
                                             noticed_renewal, page_to, site, text_of)

SERVICE = "Example Trust Services"
PROVIDER = "Example Trust Ltd."
REAL_NAMES = ("eSignTrust", "郵電", "Correios", "Macao Post", "Macau Post")
LANGUAGES = {"zh-Hant": {"Accept-Language": "zh-TW"}, "pt": {"Accept-Language": "pt-PT"},
             "en": {"Accept-Language": "en"}}


def names_no_real_provider(text: str) -> bool:
    return not any(name in text for name in REAL_NAMES)


@pytest.fixture
def branded_site(ra_database, ca_clock, registry_client, core, documents, ra_state_dir):  # noqa: F811
    """The site of test_renewal_pages with the service's and the provider's names set."""
    settings = RaSettings(state_dir=ra_state_dir, notice_days=3650, face_threshold=0.8,
                          web_attempts_per_address=1000, web_attempts_per_account=100,
                          service_name=SERVICE, provider_name=PROVIDER)
    workflow = RenewalWorkflow(ra_database, ca_clock, settings, registry=registry_client, certificates=core,
                               documents=documents, executor=InlineExecutor())
    sessions = SessionStore(ra_database, ca_clock, settings)
    ctx = WebContext(settings=settings, clock=ca_clock, workflow=workflow,
                     operations=RaOperations(ra_database, ca_clock, core), certificates=core,
                     operators=None, sessions=sessions, limits=RateLimits(settings),
                     captcha=Captcha(ca_clock, sessions), templates=Templates.create(load_catalogues()))
    with Served(build_site(ctx)) as running:
        yield Site(running, ctx, ra_database)


@pytest.fixture
def smtp_inbox():
    inbox = Inbox()
    controller = smtp_on_loopback(inbox)
    inbox.port = controller.port
    yield inbox
    controller.stop()


def at_review(site: Site, core, account: str, language: dict):  # noqa: F811
    """A holder's browser at the review page of a renewal: consent, e-mail codes, the registry's
    check and the photo done through the pages."""
    renewal, _ = noticed_renewal(site, core, account)
    holder = site.holder(account, language=language)
    base = f"/holder/renewals/{renewal.id}"
    page_to(holder.post(base + "/consent", {"consent": "yes"}), renewal.id)
    for index, address in enumerate(renewal.emails):
        page_to(holder.post(base + "/codes", {"address": address}), renewal.id)
        page_to(holder.post(base + "/codes/verify", {"address": address,
                                                     f"code-{index}": code_sent_to(site.database, address)}),
                renewal.id)
    page_to(holder.post(base + "/registry"), renewal.id)
    page_to(holder.post(base + "/photo", files={"photo": ("me.png", photo("kuan-weng-sam.png"), "image/png")}),
            renewal.id)
    return holder, base


def in_person_outcome(site: Site, ca_clock, account: str, serial: str):
    """A renewal of a type issued in person whose application is signed: its outcome page shows
    help code AC-AB-0007."""
    now = ca_clock.now()
    renewal = opened_renewal(site.database, replace(KUAN, account=account), now, profile="qualified-government",
                             serial=serial)
    in_state(site, renewal, lambda r: machine.confirm(r, OPERATOR, now),
             lambda r: machine.give_notice(r, now, token_hash="t"),
             lambda r: replace(r, state=State.AWAITING_APPLICATION, consent_at=now, agreement_at=now,
                               registry_checked_at=now, face_score=0.9))
    application_signed_in_store(site.database, renewal.id)
    return f"/holder/renewals/{renewal.id}"


# The settings

def test_the_names_are_settings_with_environment_overrides(tmp_path):
    assert RaSettings().service_name == "" and RaSettings().provider_name == ""
    config = tmp_path / "signserver.toml"
    config.write_text('[ra]\nservice_name = "Servizo"\nprovider_name = "  Example Trust Ltd.  "\n')
    assert load_settings(config, environ={}).provider_name == PROVIDER
    loaded = load_settings(config, environ={"SIGNSERVER_RA_SERVICE_NAME": SERVICE})
    assert loaded.service_name == SERVICE and loaded.provider_name == PROVIDER
    with pytest.raises(SettingsError, match="ra.provider_name"):
        load_settings(config, environ={"SIGNSERVER_RA_PROVIDER_NAME": "Bad\nname"})


def test_an_empty_name_is_the_language_s_default_and_a_set_one_is_used_as_given():
    assert [branding.service_name("", lang) for lang in LANGUAGES] == [
        "電子證書服務", "Serviços de certificados electrónicos", "Electronic certificate services"]
    assert [branding.provider_name("", lang) for lang in LANGUAGES] == [
        "註冊署", "a entidade de registo", "the registration authority"]
    assert branding.provider_name("", "fr") == "註冊署"
    assert {branding.provider_name(PROVIDER, lang) for lang in LANGUAGES} == {PROVIDER}
    assert {branding.service_name(SERVICE, lang) for lang in LANGUAGES} == {SERVICE}


# With no name set: no real provider anywhere

@pytest.mark.parametrize("lang", LANGUAGES)
def test_by_default_no_page_names_a_real_provider(site, lang):  # noqa: F811
    browser = site.holder("brand-default-1", language=LANGUAGES[lang])
    service = branding.service_name("", lang)
    for path, status in (("/", 200), ("/password", 200), ("/no-such-page", 404)):
        page = browser.get(path)
        assert page.status_code == status, (path, page.text[:300])
        assert names_no_real_provider(page.text), path
        assert f"· {service}</title>" in page.text and f'class="site-name" href="/">{service}</a>' in page.text


def test_by_default_the_review_page_declares_to_the_neutral_provider(site, core):  # noqa: F811
    holder, base = at_review(site, core, "brand-default-2", LANGUAGES["en"])
    page = holder.get(base)
    assert "Applicant/subscriber agreement and declaration" in page.text and names_no_real_provider(page.text)
    assert "I hereby apply to the registration authority, in the applicant" in page.text
    chinese = site.holder("brand-default-2", language=LANGUAGES["zh-Hant"]).get(base)
    assert "向註冊署申請簽發指示的電子證書" in chinese.text and names_no_real_provider(chinese.text)


def test_by_default_the_help_code_guidance_names_the_neutral_provider(site, ca_clock):  # noqa: F811
    path = in_person_outcome(site, ca_clock, "brand-default-3", "b0a1")
    page = site.holder("brand-default-3", language=LANGUAGES["pt"]).get(path)
    assert "AC-AB-0007" in page.text and "Contacte a entidade de registo para marcar atendimento" in page.text
    assert names_no_real_provider(page.text)


def test_by_default_the_notice_e_mail_names_no_real_provider(site, core, ca_clock, smtp_inbox):  # noqa: F811
    holder, issued = enrolled(core, "brand-default-4")
    clear_outbox(site.database)
    site.workflow.register_holder(holder, OPERATOR)
    site.workflow.confirm_renewal(issued.serial, OPERATOR)
    mailer = OutboxMailer(site.database, ca_clock, host="127.0.0.1", port=smtp_inbox.port, sender="ra@example.mo")
    assert mailer.send_due() == len(KUAN.emails)
    for message in smtp_inbox.messages:
        body = message.get_content()
        assert "/notice/" in body or "Access key" in body
        assert names_no_real_provider(body) and names_no_real_provider(str(message["From"]))
        assert body.rstrip().endswith(" / ".join(branding.DEFAULT_SERVICE_NAMES.values()))
        assert message["From"].addresses[0].display_name.startswith("電子證書服務")


# With the names set: shown as given in every language

@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_set_provider_name_is_in_the_review_page_s_declaration(branded_site, core, lang):  # noqa: F811
    holder, base = at_review(branded_site, core, f"brand-set-{lang}", LANGUAGES[lang])
    page = holder.get(base)
    assert page.status_code == 200 and 'action="' + base + '/agreement"' in page.text
    declaration = text_of(page)
    assert declaration.count(PROVIDER) >= 5, declaration  # apply to, entrusted to, repository, authorise
    assert f"· {SERVICE}</title>" in page.text and names_no_real_provider(page.text)
    assert "%(" not in page.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_set_provider_name_is_in_a_help_code_s_guidance(branded_site, ca_clock, lang):
    path = in_person_outcome(branded_site, ca_clock, f"brand-set-code-{lang}", "b1a1")
    page = branded_site.holder(f"brand-set-code-{lang}", language=LANGUAGES[lang]).get(path)
    assert page.status_code == 200 and "AC-AB-0007" in page.text
    guidance = re.search(r"<p>([^<]*)\([^()<]*: AC-AB-0007\)</p>", page.text)
    assert guidance and PROVIDER in guidance.group(1), page.text
    assert f'class="site-name" href="/">{SERVICE}</a>' in page.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_password_page_names_the_set_provider_to_tell(branded_site, lang):
    page = branded_site.holder("brand-set-password", language=LANGUAGES[lang]).get("/password")
    assert page.status_code == 200 and text_of(page).count(PROVIDER) == 2  # tell it; bring the unlock form to it
    assert names_no_real_provider(page.text) and f"· {SERVICE}</title>" in page.text


def test_a_set_service_name_signs_the_e_mails(branded_site, core, ca_clock, smtp_inbox):  # noqa: F811
    holder, issued = enrolled(core, "brand-set-mail")
    clear_outbox(branded_site.database)
    branded_site.workflow.register_holder(holder, OPERATOR)
    branded_site.workflow.confirm_renewal(issued.serial, OPERATOR)
    mailer = OutboxMailer(branded_site.database, ca_clock, host="127.0.0.1", port=smtp_inbox.port,
                          sender="ra@example.mo", service_name=SERVICE)
    assert mailer.send_due() == len(KUAN.emails)
    for message in smtp_inbox.messages:
        assert message.get_content().rstrip().endswith(f"-- \n{SERVICE}")
        assert message["From"].addresses[0].display_name == SERVICE
        assert message["From"].addresses[0].addr_spec == "ra@example.mo"
