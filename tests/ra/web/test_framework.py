"""The pages' framework served for real (uvicorn on a free loopback port, httpx): security headers,
the session cookie and its expiry, CSRF, session fixation, languages, bounded forms, rate limits,
the captcha, errors as pages, and no 500 for garbage on the framework's paths.

The cookie is Secure, which an HTTP client keeps to HTTPS: the tests carry it by hand (Client)."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import threading
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from signserver.clock import ManualClock
from signserver.ra import errors
from signserver.ra.operator_accounts import OperatorAccounts
from signserver.ra.settings import RaSettings
from signserver.ra.store.schema import web_sessions
from signserver.ra.web.app import build_site, framework_routes
from signserver.ra.web.captcha import Captcha
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import load_catalogues
from signserver.ra.web.limits import RateLimits
from signserver.ra.web.rendering import (Templates, flash, gettext, page_route, read_form, redirect, render,
                                         text_field)
from signserver.ra.web.security import CONTENT_SECURITY_POLICY
from signserver.ra.web.sessions import SessionStore, holder_may_act, session_of, sign_in
from tests.conftest import LOOPBACK_TLS, operator_hasher
from tests.ra.running import Served

START = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)


# --- pages that exercise the framework --------------------------------------------------------

async def signing_in(request, ctx):
    form = await read_form(request)
    # As a notice link signs a holder in: a session the core is not asked about (no core here).
    sign_in(request, text_field(form, "kind"), text_field(form, "subject"), via="notice")
    return redirect("/")


async def holder_page(request, ctx):
    return PlainTextResponse(f"holder {session_of(request).subject}")


async def operator_page(request, ctx):
    return PlainTextResponse(f"operator {session_of(request).subject}")


async def echo(request, ctx):
    form = await read_form(request)
    return PlainTextResponse(text_field(form, "text", max_length=1000))


async def limited(request, ctx):
    form = await read_form(request)
    ctx.limits.check(request, "test", account=text_field(form, "account", required=False))
    return PlainTextResponse("counted")


async def captcha_form(request, ctx):
    if request.method == "GET":  # the form, with its challenge
        return HTMLResponse(render_string(ctx, request, '{% import "_forms.html" as forms %}<form method="post">'
                                                        '{{ forms.csrf() }}{{ forms.captcha() }}</form>'))
    form = await read_form(request)
    right = await run_in_threadpool(ctx.captcha.check, session_of(request), text_field(form, "captcha", required=False))
    return PlainTextResponse("right" if right else "wrong")


async def upload(request, ctx):
    form = await read_form(request, max_bytes=100 * 1024, files=True)
    return PlainTextResponse(str(len(await form["file"].read())))


async def poll(request, ctx):
    return PlainTextResponse(session_of(request).kind)


async def broken(request):
    raise RuntimeError("a fault of the RA, with a secret: PIN 1234")


async def flashing(request, ctx):
    await read_form(request)
    flash(request, gettext(request, "Page not found"), "success")
    return redirect("/")


async def json_post(request, ctx):
    return JSONResponse({"done": True})


async def failing(request, ctx):
    kind = request.path_params["kind"]
    raise {"missing": errors.RenewalNotFound("no renewal abc"),
           "refused": errors.StepRefused("the core refused", help_code="AC-AB-0015"),
           "core": errors.CoreUnavailable("the core does not answer"),
           "store": errors.StoreUnavailable("down")}[kind]


async def notice(request, ctx):
    return render(request, "home.html")


TEST_PAGES = [
    page_route("/test/sign-in", signing_in, methods=("POST",)),
    page_route("/test/holder", holder_page, who="holder"),
    page_route("/test/operator", operator_page, who="operator"),
    page_route("/test/echo", echo, methods=("POST",)),
    page_route("/test/limited", limited, methods=("POST",)),
    page_route("/test/captcha", captcha_form, methods=("GET", "POST")),
    page_route("/test/upload", upload, methods=("POST",), files=True, max_bytes=128 * 1024),
    page_route("/test/poll", poll, touch=False),
    Route("/test/broken", broken),
    page_route("/test/flash", flashing, methods=("POST",)),
    page_route("/test/json", json_post, methods=("POST",)),
    page_route("/test/fail/{kind}", failing),
    page_route("/notice/{renewal_id}/{token}", notice),
]


class Client:
    """httpx with the cookies carried by hand (Secure cookies over plain HTTP on loopback)."""

    def __init__(self, base: str, verify=LOOPBACK_TLS, **headers: str):
        self.http = httpx.Client(base_url=base, follow_redirects=False, timeout=30, verify=verify,
                                 headers={"accept-language": "zh-TW", **headers})
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.cookies and "cookie" not in {k.lower() for k in headers}:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, path, headers=headers, **kwargs)
        for line in response.headers.get_list("set-cookie"):
            self.set_cookies.append(line)
            for name, morsel in SimpleCookie(line).items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def token(self, path: str = "/") -> str:
        """The CSRF token of the session, from a page's form."""
        page = self.get(path)
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def settings(tmp_path) -> RaSettings:
    return RaSettings(state_dir=tmp_path, web_attempts_per_address=5, web_attempts_per_account=3,
                      public_url="https://ra.example.mo")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def context(settings, clock, ra_database) -> WebContext:
    sessions = SessionStore(ra_database, clock, settings)
    return WebContext(settings=settings, clock=clock, workflow=None, operations=None, certificates=None,
                      operators=OperatorAccounts(ra_database, clock, bytes(32), hasher=operator_hasher()),
                      sessions=sessions,
                      limits=RateLimits(settings), captcha=Captcha(clock, sessions),
                      templates=Templates.create(load_catalogues()))


@pytest.fixture
def site(context):
    with Served(build_site(context, pages=[*framework_routes(), *TEST_PAGES])) as served:
        yield served


@pytest.fixture
def client(site):
    client = Client(site.url)
    yield client
    client.close()


def stored_sessions(database) -> list:
    with database.transaction() as conn:
        return list(conn.execute(select(web_sessions)))


def session_row(database, client):
    session_hash = hashlib.sha256(client.cookies["ra_session"].encode()).hexdigest()
    with database.transaction() as conn:
        return conn.execute(select(web_sessions).where(web_sessions.c.id_hash == session_hash)).first()


def signed_in_client(site, kind: str, subject: str) -> Client:
    client = Client(site.url)
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": kind, "subject": subject})
    return client


# --- headers ----------------------------------------------------------------------------------

def test_every_response_carries_the_security_headers(client):
    for response in (client.get("/"), client.get("/static/site.css"), client.get("/no-such-page"),
                     client.post("/lang", data={"lang": "en"})):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["permissions-policy"] == "camera=(self)"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert "strict-transport-security" not in response.headers  # plain HTTP on loopback
    assert client.get("/").headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/static/site.css").headers.get("cache-control", "")


def test_pages_have_no_inline_script_or_style(client):
    page = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)


# --- sessions ---------------------------------------------------------------------------------

def test_the_session_cookie_is_http_only_secure_lax_and_only_its_hash_is_stored(client, ra_database):
    client.get("/")
    [line] = [line for line in client.set_cookies if line.startswith("ra_session=")]
    flags = {part.strip().lower() for part in line.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= flags
    session_id = client.cookies["ra_session"]
    assert len(session_id) >= 43  # 256 bits, base64url
    [row] = stored_sessions(ra_database)
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in json.dumps([str(value) for value in row])


def test_a_page_that_needs_no_session_keeps_none(client, ra_database):
    assert client.get("/static/site.css").status_code == 200
    assert client.get("/test/holder").status_code == 303  # a redirect carries no form
    assert stored_sessions(ra_database) == [] and "ra_session" not in client.cookies


def test_signing_in_changes_the_session_id(client, ra_database):
    before = client.cookies.get("ra_session") or (client.get("/") and client.cookies["ra_session"])
    response = client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "holder",
                                                  "subject": "kuan-ws"})
    assert response.status_code == 303
    after = client.cookies["ra_session"]
    assert after != before
    assert client.get("/test/holder").text == "holder kuan-ws"
    # The id planted before signing in opens nothing now.
    planted = client.get("/test/holder", headers={"cookie": f"ra_session={before}"})
    assert planted.status_code == 303 and planted.headers["location"] == "/sign-in?next=/test/holder"
    hashes = {row.id_hash for row in stored_sessions(ra_database)}
    assert hashlib.sha256(before.encode()).hexdigest() not in hashes


def test_pages_for_holders_and_operators_send_others_to_sign_in(client):
    assert client.get("/test/holder").headers["location"] == "/sign-in?next=/test/holder"
    assert client.get("/test/operator").headers["location"] == "/operator/sign-in?next=/test/operator"
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "holder", "subject": "kuan-ws"})
    assert client.get("/test/operator").headers["location"] == "/operator/sign-in?next=/test/operator"
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "operator", "subject": "ana"})
    assert client.get("/test/operator").text == "operator ana"


def test_a_session_ends_after_its_idle_time(client, clock):
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "holder", "subject": "kuan-ws"})
    clock.advance(seconds=899)
    assert client.get("/test/holder").status_code == 200  # and its use restarts the idle time
    clock.advance(seconds=899)
    assert client.get("/test/holder").status_code == 200
    clock.advance(seconds=900)
    assert client.get("/test/holder").status_code == 303


def test_a_session_ends_after_its_longest_time_however_used(client, clock):
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "holder", "subject": "kuan-ws"})
    for _ in range(35):  # 35 × 800 s = 28,000 s: used all along, still open
        clock.advance(seconds=800)
        assert client.get("/test/holder").status_code == 200
    clock.advance(seconds=800)
    assert client.get("/test/holder").status_code == 303


def test_ending_a_subjects_sessions_signs_out_each_of_its_browsers(site, context, ra_database):
    first, second = signed_in_client(site, "holder", "kuan-ws"), signed_in_client(site, "holder", "kuan-ws")
    other, operator = signed_in_client(site, "holder", "chan-tm"), signed_in_client(site, "operator", "kuan-ws")
    kept = signed_in_client(site, "holder", "kuan-ws")
    try:
        for client in (first, second, other, kept):
            assert client.get("/test/holder").status_code == 200
        keep = context.sessions.load(kept.cookies["ra_session"])
        assert context.sessions.end_sessions("holder", "kuan-ws", keep=keep) == 2
        for client in (first, second):
            assert client.get("/test/holder").headers["location"] == "/sign-in?next=/test/holder"
        assert other.get("/test/holder").text == "holder chan-tm"
        assert kept.get("/test/holder").text == "holder kuan-ws"
        assert operator.get("/test/operator").text == "operator kuan-ws"  # another kind of session
        assert context.sessions.end_sessions("holder", "kuan-ws") == 1
        assert kept.get("/test/holder").status_code == 303
    finally:
        for client in (first, second, other, operator, kept):
            client.close()


def test_an_ended_session_is_not_brought_back_by_a_request_under_way(context, ra_database):
    session = context.sessions.new()
    session.kind, session.subject = "holder", "kuan-ws"
    session.set("via", "account")
    context.sessions.save(session)
    loaded = context.sessions.load(session.session_id)  # a request under way
    assert context.sessions.end_sessions("holder", "kuan-ws") == 1
    loaded.set("note", "written after the end")
    assert context.sessions.save(loaded) is False
    assert stored_sessions(ra_database) == []
    assert context.sessions.load(session.session_id).kind == "anonymous"


def test_a_disabled_operator_is_signed_out_at_the_next_request(site, context, ra_database):
    context.operators.add("ana", "operator-pass-1", actor="test")
    ana, bob = signed_in_client(site, "operator", "ana"), signed_in_client(site, "operator", "bob")
    try:
        assert ana.get("/test/operator").text == "operator ana"
        assert bob.get("/test/operator").text == "operator bob"  # no account: signed in with a certificate
        context.operators.disable("ana", actor="test")
        assert ana.get("/test/operator").headers["location"] == "/operator/sign-in?next=/test/operator"
        assert {row.subject for row in stored_sessions(ra_database) if row.kind == "operator"} == {"bob"}
        assert ana.get("/").status_code == 200 and bob.get("/test/operator").text == "operator bob"
    finally:
        ana.close()
        bob.close()


def test_a_page_that_does_not_touch_the_session_leaves_its_idle_time_running(client, clock):
    client.post("/test/sign-in", data={"csrf_token": client.token(), "kind": "holder", "subject": "kuan-ws"})
    clock.advance(seconds=600)
    assert client.get("/test/poll").text == "holder"
    clock.advance(seconds=600)  # 1,200 s since the last use that counted
    assert client.get("/test/poll").text == "anonymous"
    assert client.get("/test/holder").status_code == 303


def test_the_background_pass_removes_expired_sessions(client, context, clock, ra_database):
    client.get("/")
    assert len(stored_sessions(ra_database)) == 1
    assert context.sessions.remove_expired() == 0
    clock.advance(seconds=900)
    assert context.sessions.remove_expired() == 1
    assert stored_sessions(ra_database) == []


def test_an_unknown_or_malformed_cookie_is_a_fresh_anonymous_session(client):
    for cookie in ("ra_session=" + "A" * 43, "ra_session=" + "x" * 5000, "ra_session=é", "ra_session="):
        response = client.get("/test/holder", headers={"cookie": cookie.encode()})
        assert response.status_code == 303


def test_a_holder_acts_only_on_renewals_of_the_account_and_of_the_notice():
    from signserver.ra.web.sessions import WebSession

    class Renewal:
        def __init__(self, id, account):
            self.id, self.account = id, account

    mine, other = Renewal("r1", "kuan-ws"), Renewal("r2", "kuan-ws")
    by_account = WebSession(kind="holder", subject="kuan-ws", data={"via": "account"})
    by_notice = WebSession(kind="holder", subject="kuan-ws", data={"via": "notice", "renewals": ["r1"]})
    assert holder_may_act(by_account, mine) and holder_may_act(by_account, other)
    assert holder_may_act(by_notice, mine) and not holder_may_act(by_notice, other)
    assert not holder_may_act(by_account, Renewal("r3", "chan-tm"))
    assert not holder_may_act(WebSession(kind="operator", subject="kuan-ws"), mine)
    assert not holder_may_act(WebSession(), mine)


# --- CSRF -------------------------------------------------------------------------------------

def test_a_post_without_the_sessions_token_is_refused(client):
    token = client.token()
    assert client.post("/lang", data={"lang": "en", "next": "/"}).status_code == 403
    assert client.post("/lang", data={"lang": "en", "csrf_token": "x" * 43}).status_code == 403
    assert client.post("/lang", data={"lang": "en", "csrf_token": ""}).status_code == 403
    assert client.post("/test/json", headers={"x-csrf-token": "wrong"}).status_code == 403
    assert client.post("/test/json", headers={"x-csrf-token": token}).json() == {"done": True}
    # Another browser's session has its own token.
    other = Client(client.http.base_url)
    try:
        assert other.post("/lang", data={"lang": "en", "csrf_token": token}).status_code == 403
    finally:
        other.close()
    assert client.post("/lang", data={"lang": "en", "csrf_token": token}).status_code == 303


def test_a_post_from_another_origin_is_refused(client, site):
    token = client.token()
    refused = client.post("/lang", data={"lang": "en", "csrf_token": token},
                          headers={"origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "403" in refused.text
    for origin in (site.url, "https://ra.example.mo", "null"):
        assert client.post("/lang", data={"lang": "en", "csrf_token": token},
                           headers={"origin": origin}).status_code == 303


def test_the_token_changes_with_signing_in(client):
    before = client.token()
    client.post("/test/sign-in", data={"csrf_token": before, "kind": "holder", "subject": "kuan-ws"})
    assert client.post("/lang", data={"lang": "en", "csrf_token": before}).status_code == 403
    assert client.post("/lang", data={"lang": "en", "csrf_token": client.token()}).status_code == 303


# --- languages --------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, lang, text", [
    ("zh-TW,zh;q=0.9", "zh-Hant", "證書持有人"),
    ("zh-HK", "zh-Hant", "證書持有人"),
    ("zh-MO", "zh-Hant", "證書持有人"),
    ("zh", "zh-Hant", "證書持有人"),
    ("pt-PT,pt;q=0.9,en;q=0.8", "pt", "Titulares de certificados"),
    ("en-GB,en;q=0.9", "en", "Certificate holders"),
    ("fr-FR,en;q=0.5", "en", "Certificate holders"),
    ("de-DE", "zh-Hant", "證書持有人"),
    ("", "zh-Hant", "證書持有人"),
])
def test_the_language_follows_the_browser(site, accept, lang, text):
    with httpx.Client(base_url=site.url, headers={"accept-language": accept}, verify=LOOPBACK_TLS) as http:
        page = http.get("/").text
    assert f'<html lang="{lang}">' in page and text in page


def test_the_language_switch_sets_a_cookie_and_goes_back(client):
    response = client.post("/lang", data={"lang": "pt", "next": "/test/holder?x=1", "csrf_token": client.token()})
    assert response.status_code == 303 and response.headers["location"] == "/test/holder?x=1"
    [line] = [line for line in client.set_cookies if line.startswith("ra_lang=")]
    assert "secure" in line.lower() and "samesite=lax" in line.lower()
    page = client.get("/").text
    assert '<html lang="pt">' in page and "Titulares de certificados" in page
    # A language not offered is ignored; "next" is a local path only.
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        response = client.post("/lang", data={"lang": "xx", "next": target, "csrf_token": client.token()})
        assert response.headers["location"] == "/"
    assert '<html lang="pt">' in client.get("/").text


def test_instants_are_written_in_the_language_and_macaus_zone(context):
    from signserver.ra.web.i18n import format_moment

    moment = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)  # 17:00 in Macao
    assert "17:00" in format_moment(moment, "pt") and "dez" in format_moment(moment, "pt")
    assert "下午5:00" in format_moment(moment, "zh-Hant") and "2026年12月1日" in format_moment(moment, "zh-Hant")
    assert "5:00" in format_moment(moment, "en") and "Dec" in format_moment(moment, "en")


# --- forms, limits, errors --------------------------------------------------------------------

def test_an_oversized_form_is_a_413_page(client):
    token = client.token()
    response = client.post("/test/echo", data={"csrf_token": token, "text": "x" * (70 * 1024)})
    assert response.status_code == 413 and "資料過大" in response.text
    huge = client.post("/test/echo", content=b"csrf_token=" + token.encode() + b"&text=" + b"x" * (2 << 20),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    assert client.post("/test/echo", data={"csrf_token": token, "text": "  fine  "}).text == "fine"


def test_text_fields_refuse_control_characters_and_overlong_values(client):
    token = client.token()
    for text in ("a\x00b", "a\x1bb", "x" * 1001, "a\nb"):
        assert client.post("/test/echo", data={"csrf_token": token, "text": text}).status_code == 400
    broken = client.post("/test/echo", content=f"csrf_token={token}&text=%ED%A0%80%FF".encode(),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert broken.status_code in (200, 400) and broken.status_code != 500


def test_a_form_with_a_file_where_none_is_expected_is_refused_unread(client):
    token = client.token()
    response = client.post("/test/echo", data={"csrf_token": token, "text": "a"},
                           files={"photo": ("a.png", b"\x89PNG", "image/png")})
    assert response.status_code == 415
    # Refused on its media type, before its body is read, whatever its size.
    refused = client.post("/test/echo", content=b"x" * (2 << 20),
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert refused.status_code == 415


def test_a_page_that_takes_files_reads_them_within_its_limit(client):
    token = client.token()
    accepted = client.post("/test/upload", data={"csrf_token": token}, files={"file": ("a.bin", b"x" * 1000)})
    assert accepted.text == "1000"
    assert client.post("/test/upload", data={"csrf_token": token},
                       files={"file": ("a.bin", b"x" * (200 * 1024))}).status_code == 413
    assert client.post("/test/upload", files={"file": ("a.bin", b"x")}).status_code == 403


def test_the_csrf_check_reads_no_more_than_the_pages_limit(client):
    token = client.token()
    # A urlencoded body past 64 KiB is refused by the CSRF check itself (the token comes last).
    response = client.post("/test/json", content=b"x=" + b"y" * (100 * 1024) + b"&csrf_token=" + token.encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_past_the_attempts_of_an_account_or_an_address_a_429(client):
    token = client.token()
    for _ in range(3):
        assert client.post("/test/limited", data={"csrf_token": token, "account": "kuan-ws"}).text == "counted"
    refused = client.post("/test/limited", data={"csrf_token": token, "account": "KUAN-WS"})
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 600
    # The address has made 3 counted attempts; 2 more with other accounts, then it is the address.
    for account in ("a", "b"):
        assert client.post("/test/limited", data={"csrf_token": token, "account": account}).status_code == 200
    assert client.post("/test/limited", data={"csrf_token": token, "account": "c"}).status_code == 429


def test_an_ipv6_client_is_counted_by_its_64_and_every_form_shares_one_budget():
    from starlette.requests import Request

    from signserver.ra.web.limits import RateLimited

    limits = RateLimits(RaSettings(web_attempts_per_address=2, web_attempts_per_account=2), monotonic=lambda: 0.0)

    def request(address: str) -> Request:
        return Request({"type": "http", "client": (address, 1), "headers": []})

    limits.check(request("2001:db8:1:2::1"), "f")
    limits.check(request("2001:db8:1:2:ffff::9"), "f")
    with pytest.raises(RateLimited):
        limits.check(request("2001:db8:1:2:abcd::1"), "f")  # the same /64
    limits.check(request("2001:db8:1:3::1"), "f")  # another /64
    # Across forms: 3 forms' worth (6 attempts), then every form is closed to the address.
    for form in ("g", "g", "h", "h"):
        limits.check(request("2001:db8:1:2::1"), form)
    with pytest.raises(RateLimited):
        limits.check(request("2001:db8:1:2::1"), "i")
    limits.check(request("192.0.2.7"), "i")


def test_the_rate_limits_window_slides():
    from starlette.requests import Request

    from signserver.ra.web.limits import RateLimited

    now = [1000.0]
    limits = RateLimits(RaSettings(web_attempts_per_address=2, web_attempts_per_account=2), monotonic=lambda: now[0])
    request = Request({"type": "http", "client": ("192.0.2.1", 1), "headers": []})
    limits.check(request, "f")
    now[0] += 300
    limits.check(request, "f")
    with pytest.raises(RateLimited) as refused:
        limits.check(request, "f")
    assert refused.value.retry_after == 300
    now[0] += 300
    limits.check(request, "f")  # the first attempt left the window
    limits.check(Request({"type": "http", "client": ("192.0.2.2", 1), "headers": []}), "f")


def test_errors_become_pages_with_their_status(client):
    assert client.get("/test/fail/missing").status_code == 404
    refused = client.get("/test/fail/refused")
    assert refused.status_code == 409 and "AC-AB-0015" in refused.text and "請先撤銷原證書" in refused.text
    assert client.get("/test/fail/core").status_code == 503
    assert client.get("/test/fail/store").status_code == 503
    missing = client.get("/no/such/page", headers={"accept-language": "pt"})
    assert missing.status_code == 404 and "Esta página não existe." in missing.text
    assert client.request("DELETE", "/").status_code == 405


def test_a_500_from_outside_a_page_is_a_page_with_the_security_headers(client, caplog):
    with caplog.at_level(logging.INFO, logger="signserver.ra.web.access"):
        response = client.get("/test/broken")
    assert response.status_code == 500
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    assert "PIN 1234" not in response.text and "RuntimeError" not in response.text
    assert any("GET /test/broken 500" in record.getMessage() for record in caplog.records
               if record.name == "signserver.ra.web.access")


def test_a_flash_is_shown_once(client):
    client.post("/test/flash", data={"csrf_token": client.token()})
    first = client.get("/").text
    assert 'role="status"' in first and "找不到頁面" in first
    assert "找不到頁面" not in client.get("/").text


def test_the_request_log_masks_the_notice_links_token(client, caplog):
    with caplog.at_level(logging.INFO, logger="signserver.ra.web.access"):
        assert client.get("/notice/abc123/SECRET-TOKEN-VALUE?x=1").status_code == 200
        client.get("/notice/abc123/SECRET-TOKEN-VALUE/")  # Starlette's redirect without the slash
        client.get("/notice/abc123/SECRET-TOKEN-VALUE/more")
        client.get("/notice//SECRET-TOKEN-VALUE")
    lines = [record.getMessage() for record in caplog.records if record.name == "signserver.ra.web.access"]
    assert len(lines) == 4 and all("/notice/abc123/***" in line for line in lines[:3])
    assert any("/notice/abc123/***" in line and " 200 " in line for line in lines)
    assert not any("SECRET-TOKEN-VALUE" in line for line in lines)


# --- captcha ----------------------------------------------------------------------------------

def captcha_answer(database, client) -> str:
    session_hash = hashlib.sha256(client.cookies["ra_session"].encode()).hexdigest()
    with database.transaction() as conn:
        data = conn.execute(select(web_sessions.c.data).where(web_sessions.c.id_hash == session_hash)).scalar_one()
    return json.loads(data)["captcha"]["answer"]


def captcha_form(client) -> str:
    """The captcha form's page (a new challenge); the session's CSRF token."""
    page = client.get("/test/captcha")
    assert page.status_code == 200 and re.search(r'src="/captcha\.png\?c=[\w-]+"', page.text)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_the_captcha_image_shows_the_forms_challenge_and_changes_nothing(client, ra_database):
    assert client.get("/captcha.png").status_code == 404  # no form has shown a challenge
    token = captcha_form(client)
    first = captcha_answer(ra_database, client)
    assert len(first) == 5 and not set(first) & set("0O1IL2Z5S8BUV")
    for _ in range(2):  # another site's <img src=".../captcha.png"> ends nothing
        image = client.get("/captcha.png")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG") and image.headers["cache-control"] == "no-store"
        assert captcha_answer(ra_database, client) == first
    # A new image: a POST with the session's token only.
    assert client.post("/captcha/new").status_code == 403
    assert client.post("/captcha/new", headers={"x-csrf-token": "x" * 43}).status_code == 403
    assert captcha_answer(ra_database, client) == first
    fresh = client.post("/captcha/new", headers={"x-csrf-token": token})
    assert fresh.status_code == 200 and fresh.content.startswith(b"\x89PNG")
    second = captcha_answer(ra_database, client)
    if second != first:  # (one chance in 23^5 that the new image has the same answer)
        # The first image's challenge ended when the second was made.
        assert client.post("/test/captcha", data={"csrf_token": token, "captcha": first}).text == "wrong"


def test_a_captcha_answers_once(client, ra_database):
    token = captcha_form(client)
    answer = captcha_answer(ra_database, client)
    assert client.post("/test/captcha", data={"csrf_token": token, "captcha": "WRONG"}).text == "wrong"
    assert client.post("/test/captcha", data={"csrf_token": token, "captcha": answer}).text == "wrong"
    captcha_form(client)
    answer = captcha_answer(ra_database, client)
    assert client.post("/test/captcha", data={"csrf_token": token, "captcha": f" {answer.lower()} "}).text == "right"
    assert client.post("/test/captcha", data={"csrf_token": token, "captcha": answer}).text == "wrong"


def test_parallel_submissions_of_one_captcha_answer_pass_once(client, ra_database):
    token = captcha_form(client)
    answer = captcha_answer(ra_database, client)
    cookie = f"ra_session={client.cookies['ra_session']}"
    start = threading.Barrier(12)
    answers: list[str] = []

    def submit() -> None:
        with httpx.Client(base_url=client.http.base_url, timeout=30, verify=LOOPBACK_TLS) as http:
            start.wait()
            answers.append(http.post("/test/captcha", data={"csrf_token": token, "captcha": answer},
                                     headers={"cookie": cookie}).text)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == ["right"] + ["wrong"] * 11
    # Whatever a submission wrote back into the session, the spent challenge stays spent.
    if "captcha" in json.loads(session_row(ra_database, client).data):
        assert client.post("/test/captcha", data={"csrf_token": token, "captcha": answer}).text == "wrong"


def test_a_captcha_expires(client, ra_database, clock):
    token = captcha_form(client)
    answer = captcha_answer(ra_database, client)
    clock.advance(seconds=301)
    client.get("/")  # the session itself is still in use
    assert client.post("/test/captcha", data={"csrf_token": token, "captcha": answer}).text == "wrong"


def test_spent_captchas_are_forgotten_once_expired(context, clock, ra_database):
    from signserver.ra.store.schema import web_spent_single_use_ids

    now = context.sessions.now()
    assert context.sessions.spend_once("c1", now + 300) and not context.sessions.spend_once("c1", now + 300)
    context.sessions.remove_expired()
    with ra_database.transaction() as conn:
        assert len(list(conn.execute(select(web_spent_single_use_ids)))) == 1
    clock.advance(seconds=300)
    context.sessions.remove_expired()
    with ra_database.transaction() as conn:
        assert list(conn.execute(select(web_spent_single_use_ids))) == []


def test_the_captcha_macro_renders_the_image_input_and_a_new_image_link(context):
    from starlette.applications import Starlette
    from starlette.requests import Request

    app = Starlette()
    app.state.web_context = context
    request = Request({"type": "http", "method": "GET", "path": "/password", "headers": [(b"accept-language", b"pt")],
                       "app": app, "query_string": b"", "scheme": "http", "server": ("x", 80)})
    request.state.session = context.sessions.new()
    environment = context.templates.environment
    with (Path(environment.loader.searchpath[0]) / "_forms.html").open() as handle:
        assert "macro captcha" in handle.read()
    html = render_string(context, request, '{% import "_forms.html" as forms %}{{ forms.csrf() }}{{ forms.captcha() }}')
    assert re.search(r'src="/captcha\.png\?c=[\w-]+"', html) and "captcha" in request.state.session.data
    assert 'alt="Imagem de segurança' in html and 'name="captcha"' in html
    assert "data-captcha-refresh" in html and request.state.session.csrf_token in html


def render_string(context, request, source: str) -> str:
    """``source`` rendered as a page's template would be, for ``request``."""
    from signserver.ra.web import rendering

    token = rendering._rendering.set(request)
    try:
        return context.templates.environment.from_string(source).render()
    finally:
        rendering._rendering.reset(token)


# --- garbage ----------------------------------------------------------------------------------

GARBAGE_BODIES = [
    (b"", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00garbage=\x80\x81", "application/x-www-form-urlencoded"),
    (b"%%%&&&===", "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--b--", "multipart/form-data; boundary=b"),
    (b"--b\r\nbroken", "multipart/form-data; boundary=b"),
    (b"--x", "multipart/form-data"),
    (b'{"lang": "en"}', "application/json"),
    (b"\x00" * 100, "application/octet-stream"),
    (b"lang=en", "text/plain"),
]


@pytest.mark.parametrize("path", ["/", "/lang", "/captcha.png", "/sign-out", "/static/site.css", "/static/../x",
                                  "/nothing"])
def test_no_500_for_garbage_on_the_frameworks_paths(client, path):
    token = client.token()
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        assert client.request(method, path).status_code < 500, method
    for body, media_type in GARBAGE_BODIES:
        for extra in ({}, {"x-csrf-token": token}):
            response = client.post(path, content=body, headers={"content-type": media_type, **extra})
            assert response.status_code < 500, (body, media_type)
    odd_headers = [{"accept-language": "zz;q=x,,;;,*" * 100}, {"origin": "http://[bad"}, {"origin": "\u00e9"},
                   {"cookie": "ra_session=\u00e9\u00e9; ra_lang=../../etc"}, {"content-length": "abc"},
                   {"host": "evil.example"}]
    for headers in odd_headers:
        try:
            response = client.post(path, data={"csrf_token": token, "lang": "en"}, headers=headers)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # httpx itself refuses to send it
        assert response.status_code < 500, headers


def test_the_whole_site_serves_the_home_page_and_its_framework_paths(settings, clock, ra_database):
    """server.build_site: the JSON API, every page module present, and the framework."""
    from signserver.ra import server

    workflow, database = server.build_workflow(settings, clock)
    try:
        app, _ = server.build_site(settings, clock, workflow, ra_database, None)
        with Served(app) as served:
            client = Client(served.url)
            assert client.get("/").status_code == 200
            assert client.get("/healthz").json() == {"status": "ok"}
            token = client.token()
            fresh = client.post("/captcha/new", headers={"x-csrf-token": token})
            assert fresh.status_code == 200 and client.get("/captcha.png").headers["content-type"] == "image/png"
            token = client.token()
            assert client.post("/sign-out", data={"csrf_token": token}).status_code == 303
            client.close()
    finally:
        database.close()


def test_the_field_and_error_macros_label_and_describe_their_inputs(context):
    from starlette.applications import Starlette
    from starlette.requests import Request

    app = Starlette()
    app.state.web_context = context
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "app": app,
                       "query_string": b"", "scheme": "http", "server": ("x", 80)})
    request.state.session = context.sessions.new()
    html = render_string(context, request, '{% import "_forms.html" as forms %}'
                         '{{ forms.errors({"account": "Type your account"}) }}'
                         '{{ forms.field("account", "Account", value="<kuan>", error="Type your account", hint="h") }}'
                         '{{ forms.field("password", "Password", type="password", value="secret", required=False) }}'
                         '{{ forms.submit("Go") }}')
    assert '<a href="#field-account">Type your account</a>' in html and 'role="alert"' in html
    assert '<label for="field-account">Account' in html and 'id="field-account"' in html
    assert 'aria-invalid="true"' in html and 'aria-describedby="field-account-hint field-account-error"' in html
    assert 'value="&lt;kuan&gt;"' in html  # escaped
    assert "secret" not in html  # a password is never written back into the page
    assert '<button type="submit" class="button">Go</button>' in html


def test_a_secret_field_is_taken_as_typed():
    from starlette.datastructures import FormData

    from signserver.ra.web.forms import BadForm, secret_field

    form = FormData([("password", "  pass wörd 1 "), ("bad", "pass\x00word"), ("empty", "")])
    assert secret_field(form, "password") == "  pass wörd 1 "
    assert secret_field(form, "empty", required=False) == ""
    for name in ("bad", "empty", "missing"):
        with pytest.raises(BadForm) as refused:
            secret_field(form, name)
        assert refused.value.field == name and "pass" not in str(refused.value)


def test_tls_adds_strict_transport_security(context):
    import asyncio

    async def over_tls() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_site(context, pages=framework_routes()))
        async with httpx.AsyncClient(transport=transport, base_url="https://ra.example.mo") as tls:
            return await tls.get("/")

    assert asyncio.run(over_tls()).headers["strict-transport-security"].startswith("max-age=")


# --- operators signed in with an RA client certificate ------------------------------------------

async def certificate_signing_in(request, ctx):
    from signserver.ra.web.client_certificate import client_certificate_der, operator_from_certificate

    await read_form(request)
    name = operator_from_certificate(client_certificate_der(request), ctx.settings)
    sign_in(request, "operator", name, via="certificate")
    return redirect("/")


def test_a_certificate_sessions_operator_needs_the_certificate_and_its_standing(served, ca_service, clock, ra_database,
                                                                                 tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from signserver.client import CertificateClient
    from signserver.ra.web.client_certificate import http_protocol, tls_options
    from tests.ca.test_certificate_service import client_pair
    from tests.ra.web.test_client_certificate import pair_files, self_signed

    self_signed(tmp_path, "localhost", ExtendedKeyUsageOID.SERVER_AUTH)
    (tmp_path / "ca.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                               for c in ca_service.ca.chain()))
    pair_files(ca_service, tmp_path, "client-ra", "ra")  # the RA's own
    issued, certificate, key = client_pair(ca_service, "client-ra", "counter-8")
    (tmp_path / "counter-8.pem").write_bytes(certificate)
    (tmp_path / "counter-8-key.pem").write_bytes(key)
    settings = RaSettings(state_dir=tmp_path, tls_cert=tmp_path / "localhost.pem",
                          tls_key=tmp_path / "localhost-key.pem", operator_client_ca=tmp_path / "ca.pem",
                          client_cert=tmp_path / "ra.pem", client_key=tmp_path / "ra-key.pem",
                          public_url="https://ra.example.mo")
    roots = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    core = CertificateClient(f"localhost:{served.port}", root_certificates=roots,
                             client_certificate=(tmp_path / "ra.pem").read_bytes(),
                             client_key=(tmp_path / "ra-key.pem").read_bytes())
    sessions = SessionStore(ra_database, clock, settings)
    context = WebContext(settings=settings, clock=clock, workflow=None, operations=None, certificates=core,
                         operators=OperatorAccounts(ra_database, clock, bytes(32), hasher=operator_hasher()),
                         sessions=sessions,
                         limits=RateLimits(settings), captcha=Captcha(clock, sessions),
                         templates=Templates.create(load_catalogues()))
    pages = [*framework_routes(), *TEST_PAGES,
             page_route("/test/certificate-sign-in", certificate_signing_in, methods=("POST",))]

    def verify(certificate_name: str | None = None):
        import ssl

        tls = ssl.create_default_context(cafile=str(tmp_path / "localhost.pem"))
        if certificate_name:
            tls.load_cert_chain(tmp_path / f"{certificate_name}.pem", tmp_path / f"{certificate_name}-key.pem")
        return tls

    try:
        with Served(build_site(context, pages=pages), tls=(tls_options(settings), http_protocol(settings))) as site:
            operator, thief = Client(site.url, verify=verify("counter-8")), Client(site.url, verify=verify())
            try:
                assert operator.post("/test/certificate-sign-in",
                                     data={"csrf_token": operator.token()}).status_code == 303
                assert operator.get("/test/operator").text == "operator counter-8"
                # The cookie without the certificate opens nothing, and ends nothing.
                assert thief.get("/test/operator", headers={"cookie": f"ra_session={operator.cookies['ra_session']}"}
                                 ).status_code == 303
                assert operator.get("/test/operator").text == "operator counter-8"
                ca_service.ca.revoke(issued.serial, "privilegeWithdrawn", "operator:test")
                clock.advance(seconds=61)  # past the time the core's last answer holds
                assert operator.get("/test/operator").headers["location"] == "/operator/sign-in?next=/test/operator"
                assert not [row for row in stored_sessions(ra_database) if row.kind == "operator"]
            finally:
                operator.close()
                thief.close()
    finally:
        core.close()
