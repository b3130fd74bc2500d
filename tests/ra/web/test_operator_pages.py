"""The operators' pages of a running `signserver ra serve` (a real served core over mutual TLS, the
reference registry, an SMTP inbox), driven over HTTP with httpx as a browser would: sign-in with an
operator account and its one-time password (refusals, lock), the dashboard's confirmations,
notices and limits, the in-person completion with a CSR upload, enrolment with the secrets shown
once, unlock, revocation, search and a holder's page; a holder's session and a request without
the CSRF token are refused; no input makes a 500; every action is audited under the operator's
name and no secret reaches the audit trail."""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import re
import secrets
import ssl
from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest

from signserver.clock import SystemClock, epoch_seconds
from signserver.ra.operator_accounts import OperatorAccounts
from signserver.ra.renewal import State
from signserver.ra.settings import load_settings
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase
from signserver.ra.web.sessions import SessionStore
from tests.ca.test_certificate_service import client_pair
from tests.conftest import LOOPBACK_TLS
from tests.ra.conftest import KUAN, opened_renewal
from tests.ra.running import Served, card_csr, enrol, password_set, register
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.refused_writes import writes_refused

OPERATOR_PASSWORD = "Operator-pass-1"
HOLDER_PASSWORD = "First-pass-1"
PHRASE = "Phrase2026ok"
COOKIE = "ra_session"


class Page:
    """A browser's view of the RA over httpx: keeps the session cookie (the RA marks it Secure,
    which a browser keeps for http://localhost and httpx's jar does not) and fills in the CSRF
    token of the last page shown."""

    def __init__(self, base: str, language: str = "en", **client):
        self.base = base
        self.cookie = ""
        self.csrf = ""
        self.http = httpx.Client(base_url=base, timeout=120, follow_redirects=False,
                                 headers={"Accept-Language": language}, **{"verify": LOOPBACK_TLS, **client})

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        # A TLS connection left open holds the server's stop: it waits for a close_notify that an
        # idle client never answers.
        self.http.close()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **({"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {})}
        response = self.http.request(method, path, headers=headers, **kwargs)
        found = re.search(rf"{COOKIE}=([^;]+)", response.headers.get("set-cookie", ""))
        if found:
            self.cookie = found.group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if token:
            self.csrf = token.group(1)
        return response

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self._send("GET", path, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, files=None, **kwargs) -> httpx.Response:
        body = {**({"csrf_token": self.csrf} if csrf else {}), **(data or {})}
        return self._send("POST", path, data=body, files=files, **kwargs)

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code == 303, (response.status_code, response.text[:2000])
        return self.get(response.headers["location"])


def text_of(response: httpx.Response) -> str:
    """The page's visible text, tags removed and entities read, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


@pytest.fixture(scope="module")
def settings(ra_process):
    return load_settings(ra_process.config)


@pytest.fixture(scope="module")
def database(settings):
    database = RaDatabase(settings.database)
    yield database
    database.close()


@pytest.fixture(scope="module")
def operators(settings, database):
    return OperatorAccounts.from_settings(settings, database, SystemClock())


def new_operator(operators) -> tuple[str, pyotp.TOTP]:
    """A new operator account (a name of its own: each TOTP step signs in once per operator)."""
    name = f"counter-{secrets.token_hex(4)}"
    uri = operators.add(name, OPERATOR_PASSWORD, "tests")
    return name, pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


def signed_in(ra_process, operators, language: str = "en") -> tuple[Page, str]:
    page = Page(ra_process.base, language)
    page.get("/operator/sign-in")
    name, totp = new_operator(operators)
    done = page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD, "otp": totp.now()})
    assert done.status_code == 303 and done.headers["location"] == "/operator", text_of(done)
    page.get("/operator")  # the session's new CSRF token (a sign-in renews it)
    return page, name


@pytest.fixture(scope="module")
def operator(ra_process, operators):
    """A browser signed in as an operator for the module (the page and the operator's name)."""
    return signed_in(ra_process, operators)


def submission_of(form_page: httpx.Response) -> str:
    """The single-use id of the form a page shows (an enrolment's)."""
    return re.search(r'name="submission" value="([^"]+)"', form_page.text).group(1)


def audit(database, action: str) -> list[dict]:
    with database.transaction() as conn:
        return [e for e in repository.audit_entries(conn) if e["action"] == action]


# --- sign-in ------------------------------------------------------------------------------------


def test_an_operator_signs_in_with_the_password_and_one_time_password(ra_process, operators, database):
    page = Page(ra_process.base)
    sent_away = page.get("/operator")
    assert sent_away.status_code == 303 and sent_away.headers["location"] == "/operator/sign-in?next=/operator"
    form = page.get("/operator/sign-in?next=/operator/search")
    assert form.status_code == 200 and 'name="otp"' in form.text and "/operator/sign-in/certificate" not in form.text
    anonymous_cookie = page.cookie
    name, totp = new_operator(operators)

    done = page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD, "otp": totp.now(),
                                           "next": "/operator/search"})
    assert done.status_code == 303 and done.headers["location"] == "/operator/search"
    assert page.cookie and page.cookie != anonymous_cookie  # a new session id on signing in
    assert page.get("/operator").status_code == 200
    assert [e["actor"] for e in audit(database, "operator_signed_in")].count(name) == 1


@pytest.mark.parametrize("next_path", ["https://elsewhere.example/", "//elsewhere.example/", "/sign-in", "/holder"])
def test_after_the_sign_in_only_an_operator_page_is_the_next_page(ra_process, operators, next_path):
    page = Page(ra_process.base)
    page.get("/operator/sign-in")
    name, totp = new_operator(operators)
    done = page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD, "otp": totp.now(),
                                           "next": next_path})
    assert done.status_code == 303 and done.headers["location"] == "/operator"


def test_a_refused_sign_in_says_the_same_for_every_factor_and_then_locks(ra_process, operators):
    page = Page(ra_process.base)
    page.get("/operator/sign-in")
    name, totp = new_operator(operators)
    answers = []
    for given in ({"name": name, "password": "Wrong-pass-1", "otp": totp.now()},
                  {"name": name, "password": OPERATOR_PASSWORD, "otp": "000000"},
                  {"name": "nobody-" + name, "password": OPERATOR_PASSWORD, "otp": totp.now()}):
        refused = page.post("/operator/sign-in", given)
        assert refused.status_code == 401
        answers.append(re.search(r'role="alert">([^<]*)<', refused.text).group(1))
        assert OPERATOR_PASSWORD not in refused.text and "Wrong-pass-1" not in refused.text
    assert len(set(answers)) == 1 and "not right" in answers[0]
    assert page.get("/operator").status_code == 303

    for _ in range(3):
        last = page.post("/operator/sign-in", {"name": name, "password": "Wrong-pass-1", "otp": "000000"})
    assert last.status_code == 423 and "locked until" in text_of(last)
    right_but_locked = page.post("/operator/sign-in", {"name": name, "password": OPERATOR_PASSWORD,
                                                       "otp": totp.now()})
    assert right_but_locked.status_code == 423 and page.get("/operator").status_code == 303


def test_an_unknown_name_locks_as_a_known_one_does(ra_process, operators):
    # From an address of its own: the attempts per address of the module's other sign-ins stay apart.
    page = Page(ra_process.base, transport=httpx.HTTPTransport(local_address="127.0.0.2", verify=LOOPBACK_TLS))
    page.get("/operator/sign-in")
    known, _ = new_operator(operators)
    answers = {}
    for name in (known, "nobody-" + secrets.token_hex(4)):
        statuses = [page.post("/operator/sign-in", {"name": name, "password": "Wrong-pass-1", "otp": "000000"})
                    for _ in range(5)]
        answers[name] = ([r.status_code for r in statuses],
                         re.sub(r"until .*\.", "until ...", re.search(r'role="alert">([^<]*)<', statuses[-1].text)
                                .group(1)))
    assert list(answers.values())[0] == list(answers.values())[1]
    assert answers[known][0] == [401] * 4 + [423] and "locked until" in answers[known][1]


@pytest.mark.parametrize("given, expected", [
    ("/operator/search?q=kuan", "/operator/search?q=kuan"), ("/operator", "/operator"),
    ("/operator/sign-in", "/operator"), ("/operator/sign-in/certificate", "/operator"),
    ("/operators-elsewhere", "/operator"), ("/operator/../holder", "/operator"),
    ("/operator/%2e%2E/holder", "/operator"),
    ("//elsewhere.example/operator", "/operator"), ("/\\elsewhere.example", "/operator"),
    ("https://elsewhere.example/operator", "/operator"), ("/operator/x\nSet-Cookie: a=b", "/operator"),
    ("", "/operator"),
])
def test_the_next_page_is_a_local_operator_page(given, expected):
    from signserver.ra.web.operator_sign_in import next_page

    assert next_page(given) == expected


def test_disabling_an_operator_or_a_new_password_ends_their_sessions(ra_process, settings, database):
    accounts = OperatorAccounts.from_settings(settings, database, SystemClock(),
                                              SessionStore(database, SystemClock(), settings))
    (disabled, disabled_name), (reset, reset_name) = (signed_in(ra_process, accounts) for _ in range(2))
    still, _ = signed_in(ra_process, accounts)
    accounts.disable(disabled_name, "tests")
    accounts.reset_password(reset_name, "Another-pass-2", "tests")
    for page in (disabled, reset):
        sent_away = page.get("/operator/search")
        assert sent_away.status_code == 303 and sent_away.headers["location"].startswith("/operator/sign-in")
    assert still.get("/operator/search").status_code == 200


def test_the_sign_in_page_speaks_the_browsers_language(ra_process):
    page = Page(ra_process.base, "zh-TW")
    shown = page.get("/operator/sign-in")
    assert shown.status_code == 200 and "操作員登入" in shown.text and "OTP 碼" in shown.text
    assert "Entrada do operador" in Page(ra_process.base, "pt-PT").get("/operator/sign-in").text


def test_a_sign_in_without_the_fields_or_the_token_is_refused(ra_process):
    page = Page(ra_process.base)
    page.get("/operator/sign-in")
    empty = page.post("/operator/sign-in", {"name": "", "password": "", "otp": ""})
    assert empty.status_code == 400 and "one-time password" in text_of(empty)
    assert page.post("/operator/sign-in", {"name": "x", "password": "y", "otp": "1"}, csrf=False).status_code == 403
    no_certificate = page.post("/operator/sign-in/certificate", {})
    assert no_certificate.status_code == 403 and page.get("/operator").status_code == 303


# --- sign-in with an RA client certificate (the RA served over TLS, asking for one) ------------


@contextlib.contextmanager
def served_over_tls(settings):
    """The RA's app (its JSON API and pages, as `signserver ra serve` assembles it) on uvicorn
    with the RA's TLS options: an optional client certificate verified against the operator CA.
    The Served carries the RA's ``database``."""
    from signserver.ra import server
    from signserver.ra.web.client_certificate import http_protocol, tls_options

    clock = SystemClock()
    certificates = server.CoreConnection(settings)
    workflow, database = server.build_workflow(settings, clock, certificates=certificates)
    app, _ = server.build_site(settings, clock, workflow, database, certificates)
    try:
        with Served(app, tls=(tls_options(settings), http_protocol(settings))) as running:
            running.database = database
            yield running
    finally:
        database.close()


@pytest.fixture(scope="module")
def over_tls(served, ca_service, ra_files, registry, tmp_path_factory):
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from signserver.ra.settings import RaSettings
    from tests.conftest import empty_database_url
    from tests.ra.web.test_client_certificate import pair_files, self_signed

    folder = tmp_path_factory.mktemp("operator-certificates")
    self_signed(folder, "localhost", ExtendedKeyUsageOID.SERVER_AUTH)
    (folder / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in ca_service.ca.chain()))
    pair_files(ca_service, folder, "client-ra", "counter-tls")
    revoked, certificate, key = client_pair(ca_service, "client-ra", "counter-revoked")
    (folder / "counter-revoked.pem").write_bytes(certificate)
    (folder / "counter-revoked-key.pem").write_bytes(key)
    ca_service.ca.revoke(revoked.serial, "privilegeWithdrawn", "operator:test")
    settings = RaSettings(state_dir=folder, database_url=empty_database_url(folder / "ra.sqlite"),
                          core_address=f"localhost:{served.port}", client_cert=ra_files / "ra.pem",
                          client_key=ra_files / "ra-key.pem", ca_roots=ra_files / "roots.pem",
                          registry_url=registry.url, tls_cert=folder / "localhost.pem",
                          tls_key=folder / "localhost-key.pem", operator_client_ca=folder / "ca.pem")
    with served_over_tls(settings) as running:
        running.folder = folder
        yield running


def tls_page(over_tls, name: str | None = None) -> Page:
    context = ssl.create_default_context(cafile=str(over_tls.folder / "localhost.pem"))
    if name:
        context.load_cert_chain(over_tls.folder / f"{name}.pem", over_tls.folder / f"{name}-key.pem")
    return Page(over_tls.url, verify=context)


def test_an_operator_signs_in_with_the_ra_certificate_the_browser_presents(over_tls):
    with tls_page(over_tls, "counter-tls") as page:
        form = page.get("/operator/sign-in?next=/operator/enrol")
        assert form.status_code == 200 and "/operator/sign-in/certificate" in form.text and "counter-tls" in form.text
        done = page.post("/operator/sign-in/certificate", {"next": "/operator/enrol"})
        assert done.status_code == 303 and done.headers["location"] == "/operator/enrol"
        assert page.get("/operator").status_code == 200
        assert "counter-tls" in text_of(page.get("/operator/enrol"))
    with over_tls.database.transaction() as conn:
        entries = [e for e in repository.audit_entries(conn) if e["action"] == "operator_signed_in"]
    assert [e["actor"] for e in entries] == ["counter-tls"] and "with=certificate" in entries[0]["detail"]


def test_a_revoked_or_absent_certificate_does_not_sign_in(over_tls):
    with tls_page(over_tls, "counter-revoked") as revoked:
        revoked.get("/operator/sign-in")
        refused = revoked.post("/operator/sign-in/certificate", {})
        assert refused.status_code == 403 and revoked.get("/operator").status_code == 303
    with tls_page(over_tls) as nobody:
        form = nobody.get("/operator/sign-in")
        assert form.status_code == 200 and "/operator/sign-in/certificate" not in form.text
        assert nobody.post("/operator/sign-in/certificate", {}).status_code == 403


# --- who may see the operators' pages ----------------------------------------------------------

OPERATOR_PAGES = ["/operator", "/operator/search?q=kuan", "/operator/holders/kuan-ws", "/operator/enrol",
                  "/operator/unlock", "/operator/revoke", "/operator/renewals/0123/in-person"]


def holder_session(settings, database, core, account: str = "kuan-ws") -> str:
    """A holder's signed-in session, written as the holder's sign-in page writes it (with the
    password the core holds for ``account`` now, its account made first when the core has none);
    its cookie."""
    store = SessionStore(database, SystemClock(), settings)
    session = store.new()
    now = epoch_seconds(SystemClock().now())
    session.kind, session.subject, session.signed_in_at = "holder", account, now
    session.data = {"via": "account", "password_set": password_set(core, account)}
    session.wanted = True
    store.save(session)
    return session.session_id


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_a_holders_session_does_not_open_an_operator_page(ra_process, core, settings, database, path):
    page = Page(ra_process.base)
    page.cookie = holder_session(settings, database, core)
    assert page.get("/holder").status_code == 200  # a holder's session that stands
    shown = page.get(path)
    assert shown.status_code == 303 and shown.headers["location"].startswith("/operator/sign-in?next=")


@pytest.mark.parametrize("path", ["/operator/renewals/confirm", "/operator/enrol", "/operator/unlock",
                                  "/operator/revoke", "/operator/renewals/0123/resend-notice",
                                  "/operator/holders/kuan-ws/identity"])
def test_an_operators_post_without_the_csrf_token_or_from_another_site_is_refused(operator, path):
    page, _ = operator
    assert page.post(path, {"serial": "01"}, csrf=False).status_code == 403
    assert page.post(path, {"serial": "01"}, headers={"Origin": "https://elsewhere.example"}).status_code == 403
    assert page.post(path, {"csrf_token": "forged", "serial": "01"}, csrf=False).status_code == 403


# --- the operator's work -----------------------------------------------------------------------


def test_the_dashboard_lists_the_certificates_due_and_confirms_a_renewal(ra_process, operator, core, inbox,
                                                                         database):
    page, name = operator
    issued = enrol(core, f"web-due-{secrets.token_hex(3)}", "cloud-signature-government")
    with database.transaction() as conn:
        repository.save_holder(conn, replace(KUAN, account=issued.account),
                               datetime.datetime.now(datetime.timezone.utc))
    board = page.get("/operator")
    assert board.status_code == 200 and issued.serial in board.text

    seen = len(inbox.messages)
    confirmed = page.follow(page.post("/operator/renewals/confirm", {"serial": issued.serial}))
    assert f"The renewal of certificate {issued.serial} is confirmed." in text_of(confirmed)
    inbox.wait_for(KUAN.emails[0], "Certificate renewal notice", seen)
    with database.transaction() as conn:
        [renewal] = repository.list_renewals(conn, account=issued.account)
    assert renewal.confirmed_by == name and renewal.state is State.AWAITING_IDENTITY
    assert "resend-notice" in confirmed.text and renewal.id in confirmed.text

    seen = len(inbox.messages)
    resent = page.follow(page.post(f"/operator/renewals/{renewal.id}/resend-notice"))
    assert "was sent again with a new link" in text_of(resent)
    inbox.wait_for(KUAN.emails[0], "Certificate renewal notice", seen)
    assert (name, renewal.id) in [(e["actor"], e["renewal_id"]) for e in audit(database, "notice_resent")]

    again = page.follow(page.post("/operator/renewals/confirm", {"serial": issued.serial}))
    assert "was confirmed already" in text_of(again)  # said on the dashboard, no error page
    unknown = page.follow(page.post("/operator/renewals/confirm", {"serial": "ffff0000"}))
    assert unknown.status_code == 200 and "has no such account or certificate" in text_of(unknown)


def test_operator_pages_name_certificate_types_as_the_documents_do(operator, core, database):
    """The enrolment form's types and the search's certificates are named in the page's language,
    with the profile's identifier (what the command line takes) as the element's title."""
    page, _ = operator
    chinese = {"headers": {"Accept-Language": "zh-Hant"}}
    form = page.get("/operator/enrol", **chinese)
    assert form.status_code == 200
    options = dict(re.findall(r'<option value="(cloud-signature-[a-z]+|qualified-[a-z]+)"[^>]*>([^<]+)</option>',
                              form.text))
    assert options["cloud-signature-government"] == "政府“雲簽”帳戶", options
    assert options["qualified-corporate"] == "商業機構合格證書", options
    issued = enrol(core, f"web-label-{secrets.token_hex(3)}", "cloud-signature-government")
    with database.transaction() as conn:
        repository.save_holder(conn, replace(KUAN, account=issued.account),
                               datetime.datetime.now(datetime.timezone.utc))
    found = page.get(f"/operator/search?q={issued.account}", **chinese)
    assert found.status_code == 200
    assert '<span title="cloud-signature-government">政府“雲簽”帳戶</span>' in found.text, text_of(found)


def test_a_renewal_at_its_limits_is_reopened(ra_process, operator, database):
    page, name = operator
    renewal = opened_renewal(database, replace(KUAN, account=f"web-limits-{secrets.token_hex(3)}"),
                             datetime.datetime.now(datetime.timezone.utc), serial=secrets.token_hex(8))
    with database.transaction() as conn:
        renewal = repository.save_renewal(conn, replace(renewal, state=State.AWAITING_IDENTITY))
        repository.count_code_sent(conn, renewal.id, KUAN.emails[0], 10)
        repository.block_address(conn, renewal.id, KUAN.emails[0], datetime.datetime.now(datetime.timezone.utc))
    board = page.get("/operator")
    assert f"/operator/renewals/{renewal.id}/reopen-limits" in board.text and "Limits reached" in board.text

    reopened = page.follow(page.post(f"/operator/renewals/{renewal.id}/reopen-limits"))
    assert "start again" in text_of(reopened)
    assert f"/operator/renewals/{renewal.id}/reopen-limits" not in reopened.text
    with database.transaction() as conn:
        assert not repository.code_limits_of(conn, renewal.id, KUAN.emails[0]).blocked
    assert (name, renewal.id) in [(e["actor"], e["renewal_id"]) for e in audit(database, "limits_reopened")]


def test_the_in_person_queue_completes_a_renewal_with_the_csr_of_the_card(ra_process, operator, core, database):
    page, name = operator
    account = f"web-person-{secrets.token_hex(3)}"
    issued = enrol(core, account, "qualified-government")
    now = datetime.datetime.now(datetime.timezone.utc)
    renewal = opened_renewal(database, replace(KUAN, account=account), now, profile="qualified-government",
                             serial=issued.serial, expires=issued.not_after)
    with database.transaction() as conn:
        repository.save_renewal(conn, replace(renewal, state=State.AWAITING_IN_PERSON, registry_checked_at=now,
                                              face_score=0.93, application_sha256="ab" * 32, help_code="AC-AB-0007"))
    board = page.get("/operator")
    assert f"/operator/renewals/{renewal.id}/in-person" in board.text
    shown = page.get(f"/operator/renewals/{renewal.id}/in-person")
    assert shown.status_code == 200 and issued.serial in shown.text and 'type="file"' in shown.text

    no_file = page.post(f"/operator/renewals/{renewal.id}/in-person", files={"csr": ("", b"")})
    assert no_file.status_code == 400 and "CSR" in text_of(no_file)
    not_a_csr = page.post(f"/operator/renewals/{renewal.id}/in-person", files={"csr": ("card.csr", b"not a CSR")})
    assert not_a_csr.status_code == 409 and "refused the certificate request (CSR)" in text_of(not_a_csr)

    done = page.post(f"/operator/renewals/{renewal.id}/in-person", files={"csr": ("card.csr", card_csr())})
    assert done.status_code == 200, text_of(done)
    [new] = [c for c in core.list_certificates(account) if c.predecessor_serial == issued.serial]
    assert new.serial in done.text and "Renewal completed" in text_of(done)
    assert f"/operator/renewals/{renewal.id}/in-person" not in page.get("/operator").text
    assert (name, renewal.id) in [(e["actor"], e["renewal_id"]) for e in audit(database, "completed_in_person")]
    twice = page.post(f"/operator/renewals/{renewal.id}/in-person", files={"csr": ("card.csr", card_csr())})
    assert twice.status_code == 409


def test_a_cloud_signature_enrolment_shows_the_otp_key_and_recovery_code_once(ra_process, operator, core, database):
    page, name = operator
    account = f"web-enrol-{secrets.token_hex(3)}"
    form_page = page.get("/operator/enrol")
    assert form_page.status_code == 200
    enrolled = page.post("/operator/enrol", {
        "submission": submission_of(form_page), "account": account, "name": KUAN.name, "id_type": KUAN.id_type,
        "id_number": KUAN.id_number,
        "birth_date": KUAN.birth_date.isoformat(), "emails": ", ".join(KUAN.emails),
        "profile": "cloud-signature-government", "kind": "government", "organisation": "DSAJ",
        "recovery_code": "yes", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD,
        "revocation_phrase": PHRASE, "revocation_phrase_confirmation": PHRASE},
        files={"csr": ("", b"")})
    assert enrolled.status_code == 200, text_of(enrolled)
    [certificate] = core.list_certificates(account)
    assert certificate.serial in enrolled.text and certificate.profile == "cloud-signature-government"
    assert 'src="data:image/png;base64,' in enrolled.text
    recovery_code = re.search(r'id="recovery-code">([^<]+)<', enrolled.text).group(1)
    otp_key = re.search(r'id="otp-key">([^<]+)<', enrolled.text).group(1).replace(" ", "")
    assert recovery_code and len(otp_key) >= 16
    assert "no-store" in enrolled.headers["cache-control"]
    details = " ".join(e["detail"] for e in audit(database, "holder_enrolled") + audit(database, "certificate_issued"))
    assert account in details
    everything = " ".join(str(e) for e in audit(database, "holder_enrolled") + audit(database, "certificate_issued"))
    for secret in (HOLDER_PASSWORD, PHRASE, recovery_code, otp_key):
        assert secret not in everything
    assert any(e["actor"] == name and account in e["detail"] for e in audit(database, "holder_enrolled"))

    found = page.get(f"/operator/search?q={account}")
    assert found.status_code == 200 and certificate.serial in found.text and KUAN.name in found.text
    holder = page.get(f"/operator/holders/{account}")
    assert holder.status_code == 200 and certificate.serial in holder.text and KUAN.id_number in holder.text


def test_an_enrolment_the_ras_database_fails_to_record_still_shows_the_secrets_once(operator, core, database):
    """The core made the account (its OTP key and recovery code exist only in this answer): the page
    shows them, says the enrolment stays pending, and the pending enrolment is kept without them."""
    page, _ = operator
    account = f"web-pending-{secrets.token_hex(3)}"
    form_page = page.get("/operator/enrol")
    with writes_refused(database, "INSERT", "ra_holders"):
        shown = page.post("/operator/enrol", {
            "submission": submission_of(form_page), "account": account, "name": KUAN.name,
            "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
            "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
            "organisation": "DSAJ", "recovery_code": "yes", "password": HOLDER_PASSWORD,
            "confirmation": HOLDER_PASSWORD, "revocation_phrase": PHRASE, "revocation_phrase_confirmation": PHRASE},
            files={"csr": ("", b"")})
    assert "did not record the enrolment" in text_of(shown), text_of(shown)
    recovery_code = re.search(r'id="recovery-code">([^<]+)<', shown.text).group(1)
    otp_key = re.search(r'id="otp-key">([^<]+)<', shown.text).group(1).replace(" ", "")
    assert recovery_code and len(otp_key) >= 16
    assert "no-store" in shown.headers["cache-control"]
    assert core.list_certificates(account) == []  # the account is made; its certificate comes as it is finished
    with database.transaction() as conn:
        pending = repository.find_pending_enrolment(conn, account)
        assert repository.find_holder(conn, account) is None
    assert pending is not None and pending["holder"]["id_number"] == KUAN.id_number
    for secret in (HOLDER_PASSWORD, PHRASE, recovery_code, otp_key):
        assert secret not in str(pending)


@pytest.mark.parametrize("changes, field, message", [
    ({"profile": "qualified-government"}, "csr", "CSR"),
    ({"account": ""}, "account", "This field is required."),
    ({"birth_date": "14/03/1985"}, "birth_date", "YYYY-MM-DD"),
    ({"emails": "not-an-address"}, "emails", "e-mail addresses"),
    ({"profile": "client-ra"}, "profile", "Choose a certificate profile."),
    ({"transaction_limit": "-5"}, "transaction_limit", "whole number"),
    ({"revocation_phrase_confirmation": "Other2026ok"}, "revocation_phrase_confirmation", "differ"),
    ({"organisation": ""}, "organisation", "needs its organisation"),
    ({"revocation_phrase": "no spaces!", "revocation_phrase_confirmation": "no spaces!"}, "revocation_phrase",
     "letters and digits only"),
])
def test_an_enrolment_refused_before_the_core_is_shown_on_the_form(ra_process, operator, core, changes, field,
                                                                   message):
    page, _ = operator
    account = f"web-refused-{secrets.token_hex(3)}"
    form = {"account": account, "name": KUAN.name, "id_type": KUAN.id_type, "id_number": KUAN.id_number,
            "birth_date": KUAN.birth_date.isoformat(), "emails": KUAN.emails[0],
            "profile": "cloud-signature-government", "kind": "government", "organisation": "DSAJ",
            "password": HOLDER_PASSWORD,
            "confirmation": HOLDER_PASSWORD, "revocation_phrase": PHRASE, "revocation_phrase_confirmation": PHRASE,
            **changes}
    refused = page.post("/operator/enrol", form, files={"csr": ("", b"")})
    assert refused.status_code == 400 and message in text_of(refused)
    assert HOLDER_PASSWORD not in refused.text and PHRASE not in refused.text  # never put back in the form
    assert f'value="{account}"' in refused.text or field == "account"
    assert [c.account for c in core.list_certificates() if c.account == account] == []


def test_an_enrolment_the_core_refuses_is_shown_on_the_form(ra_process, operator, core):
    page, _ = operator
    account = f"web-weak-{secrets.token_hex(3)}"
    refused = page.post("/operator/enrol", {
        "submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
        "id_type": KUAN.id_type, "id_number": KUAN.id_number,
        "birth_date": KUAN.birth_date.isoformat(), "emails": KUAN.emails[0], "profile": "cloud-signature-government",
        "kind": "government", "password": "short", "confirmation": "short"}, files={"csr": ("", b"")})
    assert refused.status_code == 400 and "at least 8 characters" in text_of(refused)
    assert 'id="field-password-error"' in refused.text and "short" not in re.findall(r'value="([^"]*)"', refused.text)
    taken = page.post("/operator/enrol", {
        "submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
        "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
        "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
        "organisation": "DSAJ", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD},
        files={"csr": ("", b"")})
    assert taken.status_code == 200, text_of(taken)
    again = page.post("/operator/enrol", {
        "submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
        "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
        "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
        "organisation": "DSAJ", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD},
        files={"csr": ("", b"")})
    assert again.status_code == 409 and "The account exists already" in text_of(again)


def test_unlock_with_the_recovery_code_gives_a_new_one(ra_process, operator, core, database):
    page, name = operator
    account = f"web-unlock-{secrets.token_hex(3)}"
    from tests.ra.running import create_account

    first_code = create_account(core, account).recovery_code
    assert page.get("/operator/unlock").status_code == 200
    wrong = page.post("/operator/unlock", {"account": account, "recovery_code": "WRONG-CODE-0000",
                                           "new_password": "Second-pass-2", "confirmation": "Second-pass-2"})
    assert wrong.status_code == 409 and "recovery code was refused" in text_of(wrong)
    assert "WRONG-CODE-0000" not in wrong.text and "Second-pass-2" not in wrong.text
    differ = page.post("/operator/unlock", {"account": account, "recovery_code": first_code,
                                            "new_password": "Second-pass-2", "confirmation": "Second-pass-3"})
    assert differ.status_code == 400 and 'id="field-confirmation-error"' in differ.text

    unlocked = page.post("/operator/unlock", {"account": account, "recovery_code": first_code,
                                              "new_password": "Second-pass-2", "confirmation": "Second-pass-2"})
    assert unlocked.status_code == 200, text_of(unlocked)
    new_code = re.search(r'id="recovery-code">([^<]+)<', unlocked.text).group(1)
    assert new_code and new_code != first_code and "no-store" in unlocked.headers["cache-control"]
    assert any(e["actor"] == name and account in e["detail"] for e in audit(database, "account_unlocked"))


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "not recorded"])
def test_an_unlock_ends_the_holder_s_sessions(ra_process, operator, core, settings, database, recorded):
    """Not recorded: the RA's database failed once the core had unlocked, which spent the old
    recovery code and gave the new one once: the page shows it, and the sessions signed in with
    the old password ended all the same, before the core was asked."""
    page, _ = operator
    account = f"web-unlock-{secrets.token_hex(3)}"
    from tests.ra.running import create_account

    code = create_account(core, account).recovery_code
    with Page(ra_process.base) as holder:
        holder.cookie = holder_session(settings, database, core, account)  # a thief's, signed in with the old password
        assert holder.get("/holder").status_code == 200
        page.get("/operator/unlock")
        with contextlib.ExitStack() as failing:
            if not recorded:
                failing.enter_context(writes_refused(database, "INSERT", "ra_audit_trail",
                                                     "NEW.action = 'account_unlocked'"))
            unlocked = page.post("/operator/unlock", {"account": account, "recovery_code": code,
                                                      "new_password": "Second-pass-2", "confirmation": "Second-pass-2"})
        assert unlocked.status_code == 200, text_of(unlocked)
        assert ("did not record the unlock" in text_of(unlocked)) is not recorded
        new_code = re.search(r'id="recovery-code">([^<]+)<', unlocked.text).group(1)
        assert new_code and new_code != code and "no-store" in unlocked.headers["cache-control"]
        ended = holder.get("/holder")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")
    assert page.get("/operator/search").status_code == 200  # the operator's own session goes on
    assert [e for e in audit(database, "unlock_requested") if f"account={account} " in e["detail"]]
    assert bool([e for e in audit(database, "account_unlocked") if f"account={account} " in e["detail"]]) is recorded

    again = page.post("/operator/unlock", {"account": account, "recovery_code": new_code,
                                           "new_password": "Third-pass-3", "confirmation": "Third-pass-3"})
    assert again.status_code == 200, text_of(again)  # the code shown is the one the core keeps


def test_revocation_asks_for_the_reason_and_a_confirmation(ra_process, operator, core, database):
    page, name = operator
    account = f"web-revoke-{secrets.token_hex(3)}"
    issued = enrol(core, account, "cloud-signature-government")
    shown = page.get(f"/operator/revoke?serial={issued.serial}")
    assert shown.status_code == 200 and f'value="{issued.serial}"' in shown.text

    unconfirmed = page.post("/operator/revoke", {"serial": issued.serial, "reason": "keyCompromise"})
    assert unconfirmed.status_code == 400 and "Tick the box" in text_of(unconfirmed)
    bad_reason = page.post("/operator/revoke", {"serial": issued.serial, "reason": "because", "confirmed": "yes"})
    assert bad_reason.status_code == 400
    assert core.list_certificates(account)[0].status == "valid"

    revoked = page.post("/operator/revoke", {"serial": issued.serial, "reason": "keyCompromise", "confirmed": "yes"})
    assert revoked.headers["location"] == f"/operator/holders/{account}"
    holder = page.follow(revoked)
    assert f"Certificate {issued.serial} is revoked." in text_of(holder) and "Revoked" in text_of(holder)
    [record] = core.list_certificates(account)
    assert record.status == "revoked" and record.revocation_reason == "keyCompromise"
    assert any(e["actor"] == name and issued.serial in e["detail"] for e in audit(database, "certificate_revoked"))
    again = page.post("/operator/revoke", {"serial": issued.serial, "reason": "keyCompromise", "confirmed": "yes"})
    assert again.status_code == 409 and "This certificate is revoked already." in text_of(again)
    unknown = page.post("/operator/revoke", {"serial": "ffff0001", "reason": "superseded", "confirmed": "yes"})
    assert unknown.status_code == 409


def test_a_revocation_at_the_holders_request_takes_the_revocation_phrase(ra_process, operator, core, database):
    page, name = operator
    account = f"web-by-holder-{secrets.token_hex(3)}"
    issued = enrol(core, account, "cloud-signature-government")  # revocation phrase OldPhrase2024
    page.get(f"/operator/revoke?serial={issued.serial}")
    form = {"serial": issued.serial, "reason": "keyCompromise", "confirmed": "yes"}
    no_account = page.post("/operator/revoke", {**form, "revocation_phrase": "OldPhrase2024"})
    assert no_account.status_code == 400 and "OldPhrase2024" not in no_account.text
    wrong = page.post("/operator/revoke", {**form, "account": account, "revocation_phrase": "WrongPhrase99"})
    assert wrong.status_code == 409 and "revocation phrase is not right" in text_of(wrong)
    assert re.search(r'id="field-confirmed" name="confirmed" value="yes"[^>]* checked', wrong.text)  # as ticked
    assert f'value="{account}"' in wrong.text and "WrongPhrase99" not in wrong.text
    assert core.list_certificates(account)[0].status == "valid"

    done = page.post("/operator/revoke", {**form, "account": account, "revocation_phrase": "OldPhrase2024"})
    assert done.status_code == 303 and core.list_certificates(account)[0].status == "revoked"
    entries = audit(database, "certificate_revoked_by_holder") + audit(database, "holder_revocation_refused")
    assert {e["action"] for e in entries if issued.serial in e["detail"]} == {"certificate_revoked_by_holder",
                                                                             "holder_revocation_refused"}
    assert all(e["actor"] == name for e in entries if issued.serial in e["detail"])
    assert not any("Phrase" in e["detail"] for e in entries)


def test_an_operator_records_a_holders_identity_data(ra_process, operator, core, database):
    page, name = operator
    account = f"web-identity-{secrets.token_hex(3)}"
    issued = enrol(core, account, "cloud-signature-government")  # in the core, not yet registered with the RA
    shown = page.get(f"/operator/holders/{account}")
    assert shown.status_code == 200 and issued.serial in shown.text and "not registered" in text_of(shown)
    identity = {"name": KUAN.name, "id_type": KUAN.id_type, "id_number": KUAN.id_number,
                "birth_date": KUAN.birth_date.isoformat(), "emails": " ".join(KUAN.emails)}
    refused = page.post(f"/operator/holders/{account}/identity", {**identity, "birth_date": "1985-13-01"})
    assert refused.status_code == 400 and "YYYY-MM-DD" in text_of(refused)
    assert 'href="#field-birth_date"' in refused.text

    recorded = page.follow(page.post(f"/operator/holders/{account}/identity", identity))
    assert f"The identity data of {account} are recorded." in text_of(recorded) and KUAN.id_number in recorded.text
    with database.transaction() as conn:
        assert repository.find_holder(conn, account) == replace(KUAN, account=account)
    assert any(e["actor"] == name and e["detail"] == account for e in audit(database, "holder_registered"))


def test_certificates_are_listed_by_account_and_status(ra_process, operator, core):
    page, _ = operator
    account = f"web-list-{secrets.token_hex(3)}"
    issued = enrol(core, account, "cloud-signature-government")
    listed = page.get(f"/operator/search?account={account}&status=valid&expiring=")
    assert listed.status_code == 200 and issued.serial in listed.text
    assert issued.serial not in page.get(f"/operator/search?account={account}&status=revoked").text
    assert page.get("/operator/search?account=&expiring=abc").status_code == 400
    for digits in ("²", "٣", "１２"):  # digits to str.isdigit, not days
        refused = page.get(f"/operator/search?account=&expiring={digits}")
        assert refused.status_code == 400 and "number of days" in text_of(refused)
    nobody = page.get("/operator/search?account=no-such-account-here")
    assert nobody.status_code == 400 and "has no such account or certificate" in text_of(nobody)
    assert page.get("/operator/search?q=").status_code == 400


@pytest.mark.parametrize("method, path, body", [
    ("get", "/operator/holders/%00%ff", None),
    ("get", "/operator/search?q=%00%01", None),
    ("get", "/operator/search?q=" + "x" * 5000, None),
    ("get", "/operator/search?account=&expiring=²", None),
    ("get", "/operator/search?account=&expiring=٣", None),
    ("get", "/operator/renewals/nothing/in-person", None),
    ("post", "/operator/renewals/nothing/in-person", b"\xff" * 100),
    ("post", "/operator/renewals/nothing/reopen-limits", None),
    ("post", "/operator/renewals/confirm", b"serial=%00"),
    ("post", "/operator/enrol", b"account=" + b"a" * 70000),
    ("post", "/operator/unlock", b"account=%ff%fe&recovery_code=x"),
    ("post", "/operator/revoke", b"serial=\x00&reason=x"),
    ("post", "/operator/sign-in", b"name=\x01&password=x&otp=y"),
])
def test_no_input_makes_an_internal_error(operator, method, path, body):
    page, _ = operator
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if body is not None and method == "post":
        body = b"csrf_token=" + page.csrf.encode() + b"&" + body
    response = page._send(method.upper(), path, content=body, headers=headers if method == "post" else {})
    assert response.status_code < 500, (response.status_code, text_of(response)[:500])
    if path == "/operator/renewals/confirm":  # the dashboard's form: its refusal is flashed on the dashboard
        assert response.status_code == 303 and "flash--error" in page.get("/operator").text
        return
    assert response.status_code >= 400 or path.startswith("/operator/search")


def test_an_enrolment_sent_twice_issues_one_certificate(ra_process, operator, core):
    """The browser's reload of the page of secrets, or a second click, sends the same form again:
    the second is refused on the form, and no second certificate is issued."""
    from tests.ra.running import create_account

    page, _ = operator
    account = f"web-twice-{secrets.token_hex(3)}"
    create_account(core, account)
    form_page = page.get("/operator/enrol")
    form = {"account": account, "name": KUAN.name, "id_type": KUAN.id_type, "id_number": KUAN.id_number,
            "birth_date": KUAN.birth_date.isoformat(), "emails": KUAN.emails[0],
            "profile": "cloud-signature-government", "kind": "government", "existing_account": "yes",
            "submission": submission_of(form_page)}
    first = page.post("/operator/enrol", form, files={"csr": ("", b"")})
    assert first.status_code == 200, text_of(first)
    again = page.post("/operator/enrol", form, files={"csr": ("", b"")})
    assert again.status_code == 409 and "This form was sent already" in text_of(again)
    assert len(core.list_certificates(account)) == 1
    assert f'value="{account}"' in again.text  # the form keeps what was typed


LATIN_WORDS = re.compile(r"[A-Za-z]{3,}(?: [A-Za-z]{2,}){2,}")  # three English words in a row


def refusal_of(response: httpx.Response) -> str:
    """The text of the page's refusal (its alert) and of its fields' errors."""
    found = re.findall(r'<(?:div|p) class="(?:flash flash--error|field__error)"[^>]*>(.*?)</(?:div|p)>',
                       response.text, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", part)) for part in found).strip()


def test_the_operators_refusals_are_in_the_operators_language(ra_process, operators, core):
    from tests.ra.running import create_account

    page, _ = signed_in(ra_process, operators, "zh-TW")
    account = f"web-zh-{secrets.token_hex(3)}"
    create_account(core, account)
    issued = enrol(core, f"{account}-c", "cloud-signature-government")  # revocation phrase OldPhrase2024
    page.get("/operator/unlock")
    refused = {
        "wrong recovery code": page.post("/operator/unlock", {
            "account": account, "recovery_code": "WRONG-CODE-0000", "new_password": "Second-pass-2",
            "confirmation": "Second-pass-2"}),
        "no recovery code": page.post("/operator/unlock", {
            "account": account, "new_password": "Second-pass-2", "confirmation": "Second-pass-2"}),
        "weak password": page.post("/operator/unlock", {
            "account": account, "recovery_code": "WRONG-CODE-0000", "new_password": "short",
            "confirmation": "short"}),
        "unknown account": page.post("/operator/unlock", {
            "account": f"{account}-none", "recovery_code": "WRONG-CODE-0000", "new_password": "Second-pass-2",
            "confirmation": "Second-pass-2"}),
        "wrong phrase": page.post("/operator/revoke", {
            "serial": issued.serial, "reason": "keyCompromise", "confirmed": "yes", "account": f"{account}-c",
            "revocation_phrase": "WrongPhrase99"}),
        "unknown certificate": page.post("/operator/revoke", {
            "serial": "ffff0001", "reason": "superseded", "confirmed": "yes"}),
        "account taken": page.post("/operator/enrol", {
            "submission": submission_of(page.get("/operator/enrol")), "account": account, "name": KUAN.name,
            "id_type": KUAN.id_type, "id_number": KUAN.id_number, "birth_date": KUAN.birth_date.isoformat(),
            "emails": KUAN.emails[0], "profile": "cloud-signature-government", "kind": "government",
            "organisation": "DSAJ", "password": HOLDER_PASSWORD, "confirmation": HOLDER_PASSWORD},
            files={"csr": ("", b"")}),
        "search for an unknown account": page.get(f"/operator/search?account={account}-none"),
    }
    for case, response in refused.items():
        said = refusal_of(response)
        assert 400 <= response.status_code < 500 and said, (case, response.status_code, text_of(response)[:300])
        assert not LATIN_WORDS.search(said), f"{case}: English on a Chinese page: {said!r}"
    register(ra_process, f"{account}-gone")  # registered with the RA, unknown to the core
    gone = refusal_of(page.get(f"/operator/holders/{account}-gone"))
    assert gone and not LATIN_WORDS.search(gone), gone
    weak = refused["weak password"].text
    assert 'id="field-new_password-error"' in weak and 'aria-invalid="true"' in weak  # the field that is wrong
    assert 'id="field-recovery_code-error"' in refused["no recovery code"].text


def test_a_holders_page_reads_that_holder_alone(operator, core, database):
    """Not every holder whose account contains the name, each with the core's certificates: the
    page shows one holder, and the audit trail says which."""
    page, name = operator
    account = f"web-one-{secrets.token_hex(3)}"
    for suffix in ("", "-2", "-3"):
        with database.transaction() as conn:
            repository.save_holder(conn, replace(KUAN, account=account + suffix),
                                   datetime.datetime.now(datetime.timezone.utc))
    issued = enrol(core, account, "cloud-signature-government")

    shown = page.get(f"/operator/holders/{account}")
    assert shown.status_code == 200 and issued.serial in shown.text and KUAN.id_number in shown.text
    assert f"{account}-2" not in shown.text
    viewed = [json.loads(e["detail"]) for e in audit(database, "holder_viewed") if e["actor"] == name]
    assert {"account": account, "registered": True} in viewed
    assert not [e for e in audit(database, "holders_searched") if account in e["detail"]]

    unregistered = page.get(f"/operator/holders/{account}-none")
    assert unregistered.status_code == 404
    assert {"account": f"{account}-none", "registered": False} in [
        json.loads(e["detail"]) for e in audit(database, "holder_viewed")]
