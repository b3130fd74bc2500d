"""The holder's account pages of a running `signserver ra serve` against a served core, through
HTTP as a browser sends it (forms with their CSRF token, the session cookie, the captcha read from
the RA's database): the password change of document 000 and its refusals, the lockout message in
the three languages, the sign-in with the cloud-signature account, and the sign-in through the
notice e-mail's link and an e-mail code (the link spent, a replayed link refused, the token never
in the RA's log)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, select

from signserver.clock import SystemClock
from signserver.ra.settings import RaSettings

from signserver.ra.store.schema import web_sessions
from signserver.ra.web.sessions import SessionStore
from signserver.secret import Secret
from tests.conftest import LOOPBACK_TLS
from tests.ra.conftest import KUAN
from tests.ra.running import PASSWORD, confirm_with_notice, create_account, enrol, ra_command, register
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)
from tests.ra.test_application import otp_now

LOCKED = {
    "zh-Hant": "已嘗試超過 5 次，請於 30 分鐘後再試。",
    "pt": "Foram feitas mais de 5 tentativas; tente novamente dentro de 30 minutos.",
    "en": "More than 5 times have been tried, please try again 30 minutes later.",
}
REFUSED_EN = "The account name, the password or the one-time password is not right."
NEW_PASSWORD = "Brand-new-pass-2"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK = re.compile(r"(http://localhost:\d+)(/notice/([0-9a-f]{32})/([A-Za-z0-9_\-]{20,}))")
SIGN_IN_CODE = re.compile(r"Sign-in code: (\d{6})")


ADDRESSES = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count())


class Visitor:
    """A browser's part: its own cookies (the session cookie is Secure, which httpx's cookie jar
    keeps from plain HTTP even on loopback), the page's CSRF token, the captcha of its session,
    and its own client address on loopback (the RA limits attempts per address)."""

    def __init__(self, ra_process, lang: str = "en"):
        self.ra = ra_process
        self.cookies: dict[str, str] = {"ra_lang": lang}
        self.csrf = ""
        self.address = next(ADDRESSES)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **kwargs.pop("headers", {})}
        transport = httpx.HTTPTransport(local_address=self.address, verify=LOOPBACK_TLS)
        with httpx.Client(transport=transport, timeout=60) as client:
            response = client.request(method, self.ra.base + path, headers=headers, **kwargs)
        for cookie in response.headers.get_list("set-cookie"):
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "max-age=0" in cookie.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = CSRF.search(response.text) if "html" in response.headers.get("content-type", "") else None
        if found:
            self.csrf = found.group(1)
        return response

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, data: dict) -> httpx.Response:
        return self.request("POST", path, data={"csrf_token": self.csrf, **data})

    def session_row(self):
        digest = hashlib.sha256(self.cookies["ra_session"].encode()).hexdigest()
        engine = create_engine(self.ra.database)
        try:
            with engine.connect() as conn:
                return conn.execute(select(web_sessions).where(web_sessions.c.id_hash == digest)).first()
        finally:
            engine.dispose()

    def captcha(self) -> str:
        """The answer of the captcha image of this session (made when its form's page was
        rendered), as the person reads it."""
        image = self.get("/captcha.png")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        return json.loads(self.session_row().data)["captcha"]["answer"]


def change(visitor: Visitor, account: str, current: str, new: str = NEW_PASSWORD, confirmation: str | None = None,
           captcha: str | None = None) -> httpx.Response:
    visitor.get("/password")
    answer = visitor.captcha() if captcha is None else captcha
    return visitor.post("/password", {"account": account, "current_password": current, "new_password": new,
                                      "confirmation": new if confirmation is None else confirmation,
                                      "captcha": answer})


def sign_in(visitor: Visitor, account: str, password: str, otp: str, next_path: str = "") -> httpx.Response:
    visitor.get("/sign-in" + (f"?next={next_path}" if next_path else ""))
    return visitor.post("/sign-in", {"account": account, "password": password, "otp": otp,
                                     "captcha": visitor.captcha(), "next": next_path or "/holder"})


# /password

def test_a_holder_changes_the_password(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-change")
    visitor = Visitor(ra_process)
    page = visitor.get("/password")
    assert page.status_code == 200
    for name, autocomplete in (("account", "username"), ("current_password", "current-password"),
                               ("new_password", "new-password"), ("confirmation", "new-password")):
        assert re.search(rf'name="{name}"[^>]*autocomplete="{autocomplete}"|autocomplete="{autocomplete}"[^>]*'
                         rf'name="{name}"', page.text), name
    changed = change(visitor, "p1-change", PASSWORD)
    assert changed.status_code == 200 and "Your password has been changed" in changed.text, changed.text[-3000:]
    assert PASSWORD not in changed.text and NEW_PASSWORD not in changed.text
    otp = otp_now(ca_service, ca_clock, "p1-change")
    assert core.authenticate_holder("p1-change", NEW_PASSWORD, otp).account == "p1-change"


def test_the_form_is_checked_before_the_core_is_asked(ra_process, core):
    create_account(core, "p1-checks")
    visitor = Visitor(ra_process)
    cases = [
        ({"captcha": "WRONG"}, "The captcha code is not right"),
        ({"new": "Short-1"}, "at least 8 characters"),
        ({"new": "12345678-"}, "at least one letter"),
        ({"new": "OnlyLettersHere"}, "not a letter"),
        ({"confirmation": "Something-else-3"}, "not the same as the new password"),
    ]
    for changes, message in cases:  # 5 tries: the core, asked, would have locked the account
        refused = change(visitor, "p1-checks", "a wrong password 9", new=changes.get("new", NEW_PASSWORD),
                         confirmation=changes.get("confirmation"), captcha=changes.get("captcha"))
        assert refused.status_code == 400 and message in refused.text, message
        assert "a wrong password 9" not in refused.text and "Something-else-3" not in refused.text
        assert 'value="p1-checks"' in refused.text  # the account is kept, never a password
    assert change(visitor, "p1-checks", PASSWORD).status_code == 200  # the core counted no failure


def test_a_captcha_answer_is_good_for_one_try(ra_process, core):
    create_account(core, "p1-captcha")
    visitor = Visitor(ra_process)
    visitor.get("/password")
    answer = visitor.captcha()
    first = visitor.post("/password", {"account": "p1-captcha", "current_password": PASSWORD,
                                       "new_password": "short", "confirmation": "short", "captcha": answer})
    assert first.status_code == 400 and "The captcha code is not right" not in first.text
    again = visitor.post("/password", {"account": "p1-captcha", "current_password": PASSWORD,
                                       "new_password": NEW_PASSWORD, "confirmation": NEW_PASSWORD, "captcha": answer})
    assert again.status_code == 400 and "The captcha code is not right" in again.text


def test_a_wrong_account_or_password_gets_one_answer_then_the_lockout(ra_process, core):
    create_account(core, "p1-lockout")
    visitor = Visitor(ra_process)
    unknown = change(visitor, "p1-nobody", PASSWORD)
    wrong = change(visitor, "p1-lockout", "Wrong-pass-1")
    for refused in (unknown, wrong):
        assert refused.status_code == 400 and "The account name or the password is not right." in refused.text
    for _ in range(4):
        change(visitor, "p1-lockout", "Wrong-pass-1")
    for lang, message in LOCKED.items():
        visitor.cookies["ra_lang"] = lang
        locked = change(visitor, "p1-lockout", PASSWORD)  # even the right password now
        assert locked.status_code == 423 and message in locked.text, lang
    assert "Your password has been changed" not in locked.text


def test_the_core_s_rule_is_shown(ra_process, core):
    create_account(core, "p1-rules")
    visitor = Visitor(ra_process)
    same = change(visitor, "p1-rules", PASSWORD, new=PASSWORD)
    assert same.status_code == 400 and "must differ from the current one" in same.text
    named = change(visitor, "p1-rules", PASSWORD, new="p1-rules-2027")
    assert named.status_code == 400 and "may not contain the account name" in named.text


def test_an_account_name_past_the_core_s_limit_is_said_so(ra_process):
    visitor = Visitor(ra_process)
    for refused in (change(visitor, "a" * 65, PASSWORD), sign_in(visitor, "a" * 65, PASSWORD, "123456")):
        assert refused.status_code == 400 and "An account name has at most 64 characters." in refused.text


def test_a_password_change_ends_the_account_s_holder_sessions(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-ends")
    thief, holder = Visitor(ra_process), Visitor(ra_process)
    for visitor in (thief, holder):
        ca_clock.advance(seconds=30)  # a new one-time password for each
        assert sign_in(visitor, "p1-ends", PASSWORD, otp_now(ca_service, ca_clock, "p1-ends")).status_code == 303
        assert visitor.get("/holder").status_code == 200
    assert change(holder, "p1-ends", PASSWORD).status_code == 200  # from the holder's own session
    for visitor in (thief, holder):
        ended = visitor.get("/holder")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")


def test_an_unlock_at_the_counter_ends_the_account_s_holder_sessions(ra_process, core, ca_service, ca_clock):
    created = create_account(core, "p1-unlocked")
    thief = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    assert sign_in(thief, "p1-unlocked", PASSWORD, otp_now(ca_service, ca_clock, "p1-unlocked")).status_code == 303
    assert thief.get("/holder").status_code == 200
    # The holder resets the password at the counter (`signserver ra unlock`, the recovery code).
    unlocked = ra_command(ra_process, "unlock", "p1-unlocked", "--secrets-fd", "0",
                          input=f"{created.recovery_code}\n{NEW_PASSWORD}\n")
    assert unlocked["unlocked"]
    ended = thief.get("/holder")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")


def test_a_password_set_elsewhere_ends_the_sessions_signed_in_with_the_old_one(ra_process, core, ca_service,
                                                                               ca_clock):
    create_account(core, "p1-elsewhere")
    thief = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    assert sign_in(thief, "p1-elsewhere", PASSWORD, otp_now(ca_service, ca_clock, "p1-elsewhere")).status_code == 303
    assert thief.get("/holder").status_code == 200
    # The holder changes the password through an application (AccountService.ChangePassword's
    # change), not on the RA's page: the RA learns it from the core at the thief's next page.
    ca_clock.advance(seconds=30)
    ca_service.accounts.change_password("p1-elsewhere", Secret(PASSWORD), Secret(NEW_PASSWORD), Secret(NEW_PASSWORD),
                                        otp_code=None, otp_required=False, actor="application:portal")
    ended = thief.get("/holder")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")
    assert thief.session_row() is None  # its row is gone: the cookie opens nothing again
    # A session signed in with the new password stands, page after page.
    holder = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    assert sign_in(holder, "p1-elsewhere", NEW_PASSWORD,
                   otp_now(ca_service, ca_clock, "p1-elsewhere")).status_code == 303
    assert [holder.get("/holder").status_code for _ in range(3)] == [200, 200, 200]


def test_a_disabled_account_s_sessions_end_and_stay_ended(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-disabled")
    visitor = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    assert sign_in(visitor, "p1-disabled", PASSWORD, otp_now(ca_service, ca_clock, "p1-disabled")).status_code == 303
    assert visitor.get("/holder").status_code == 200
    ca_service.accounts.set_status("p1-disabled", False, "operator:test")
    ended = visitor.get("/holder")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/sign-in")
    ca_service.accounts.set_status("p1-disabled", True, "operator:test")
    assert visitor.get("/holder").status_code == 303  # enabled again: the ended session stays ended


def test_junk_naming_an_account_does_not_block_its_holder(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-victim")
    for path in ("/sign-in", "/password"):
        attacker = Visitor(ra_process)
        attacker.get(path)
        for _ in range(12):  # past the 10 attempts an account is allowed, within an address's 20
            junk = attacker.post(path, {"account": "p1-victim", "password": "x", "otp": "123456",
                                        "current_password": "x", "new_password": NEW_PASSWORD,
                                        "confirmation": NEW_PASSWORD, "captcha": "WRONG"})
            assert junk.status_code == 400 and "The captcha code is not right" in junk.text
    victim = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    assert sign_in(victim, "p1-victim", PASSWORD, otp_now(ca_service, ca_clock, "p1-victim")).status_code == 303
    assert change(victim, "p1-victim", PASSWORD).status_code == 200


def test_only_ascii_digits_make_a_one_time_password(ra_process, core):
    create_account(core, "p1-digits")
    refused = sign_in(Visitor(ra_process), "p1-digits", PASSWORD, "١٢٣٤٥٦")  # Arabic-Indic digits
    assert refused.status_code == 400 and "Enter the one-time password of your OTP app" in refused.text
    assert REFUSED_EN not in refused.text  # never sent to the core, where it would count as a failure


@pytest.mark.parametrize("data", [
    {"account": "x\x00y"},
    {"account": "é" * 5000},
    {"current_password": "\x07"},
    {"new_password": ["a", "b"]},
    {"csrf_token": "forged"},
])
def test_garbage_gets_a_page_not_a_500(ra_process, data):
    visitor = Visitor(ra_process)
    visitor.get("/password")
    for path in ("/password", "/sign-in", "/notice", "/notice/new-link"):
        response = visitor.post(path, {"account": "a", "current_password": "b", **data})
        assert 400 <= response.status_code < 500, (path, response.status_code)


# /sign-in

def test_a_holder_signs_in_with_the_account(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-sign-in")
    visitor = Visitor(ra_process)
    visitor.get("/sign-in")
    before = visitor.cookies["ra_session"]
    signed = sign_in(visitor, "p1-sign-in", PASSWORD, otp_now(ca_service, ca_clock, "p1-sign-in"),
                     next_path="/holder/renewals/abc")
    assert signed.status_code == 303 and signed.headers["location"] == "/holder/renewals/abc"
    assert visitor.cookies["ra_session"] != before  # a new id at sign-in
    row = visitor.session_row()
    standing = core.holder_standing("p1-sign-in")
    assert (row.kind, row.subject, json.loads(row.data)) == (
        "holder", "p1-sign-in", {"via": "account", "password_set": int(standing.password_changed_at.timestamp())})

    elsewhere = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    outside = sign_in(elsewhere, "p1-sign-in", PASSWORD, otp_now(ca_service, ca_clock, "p1-sign-in"),
                      next_path="//evil.example/")
    assert outside.status_code == 303 and outside.headers["location"] == "/holder"


def test_any_wrong_factor_gets_one_answer_then_the_lockout(ra_process, core, ca_service, ca_clock):
    create_account(core, "p1-factors")
    visitor = Visitor(ra_process)
    ca_clock.advance(seconds=30)
    right_otp = otp_now(ca_service, ca_clock, "p1-factors")
    wrong_otp = f"{(int(right_otp) + 1) % 1_000_000:06d}"
    answers = [sign_in(visitor, "p1-nobody", PASSWORD, right_otp),
               sign_in(visitor, "p1-factors", "Wrong-pass-1", right_otp),
               sign_in(visitor, "p1-factors", PASSWORD, wrong_otp)]
    for answer in answers:
        assert answer.status_code == 400 and REFUSED_EN in answer.text
    assert visitor.session_row().kind == "anonymous"
    for _ in range(3):
        sign_in(visitor, "p1-factors", "Wrong-pass-1", right_otp)
    for lang, message in LOCKED.items():
        visitor.cookies["ra_lang"] = lang
        ca_clock.advance(seconds=30)
        locked = sign_in(visitor, "p1-factors", PASSWORD, otp_now(ca_service, ca_clock, "p1-factors"))
        assert locked.status_code == 423 and message in locked.text, lang


# The notice link and the e-mail code

def noticed(ra_process, inbox, core, account: str) -> tuple[str, str, str]:
    """A confirmed renewal of a new cloud-signature holder: its id, the notice link's path, its token."""
    issued = enrol(core, account, "cloud-signature-government")
    register(ra_process, account)
    _, notice = confirm_with_notice(ra_process, inbox, issued.serial)
    found = LINK.search(notice)
    assert found and found.group(1) == ra_process.public_url, notice
    assert f"Access key: {found.group(4)}" in notice  # the JSON API's clients keep their key
    return found.group(3), found.group(2), found.group(4)


def link_sent(inbox, recipient: str, renewal_id: str, after: int):
    """The link of ``renewal_id`` in a notice to ``recipient`` from message ``after`` on."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for message in inbox.messages[after:]:
            found = LINK.search(message.get_content()) if message["To"] == recipient else None
            if found and found.group(3) == renewal_id:
                return found
        time.sleep(0.05)
    raise AssertionError(f"no new link for {renewal_id} to {recipient}")


def api_status(ra_process, renewal_id: str, token: str) -> int:
    return httpx.get(f"{ra_process.base}/renewals/{renewal_id}", headers={"Authorization": f"Bearer {token}"},
                     timeout=30, verify=LOOPBACK_TLS).status_code


def test_the_notice_link_and_an_e_mail_code_sign_the_holder_in_once(ra_process, inbox, core):
    renewal_id, link, token = noticed(ra_process, inbox, core, "p1-notice")
    scanner = Visitor(ra_process)
    assert scanner.get(link).status_code == 303  # a mail scanner fetched it: nothing is spent
    visitor = Visitor(ra_process)
    followed = visitor.get(link)
    assert followed.status_code == 303 and followed.headers["location"] == "/notice"
    assert api_status(ra_process, renewal_id, token) == 200

    page = visitor.get("/notice")
    assert page.status_code == 200 and "k***@example.mo" in page.text and "l***@example.mo" in page.text
    assert KUAN.emails[0] not in page.text and token not in page.text
    seen = len(inbox.messages)
    assert visitor.post("/notice", {"action": "send"}).status_code == 303
    codes = {address: SIGN_IN_CODE.search(inbox.wait_for(address, "Sign-in code", seen).get_content()).group(1)
             for address in KUAN.emails}
    [code] = set(codes.values())
    assert code not in visitor.session_row().data and token not in visitor.session_row().data
    wrong = visitor.post("/notice", {"action": "verify", "code": f"{(int(code) + 1) % 1_000_000:06d}"})
    assert wrong.status_code == 400 and "The code is not the one sent." in wrong.text
    signed = visitor.post("/notice", {"action": "verify", "code": code})
    assert signed.status_code == 303 and signed.headers["location"] == f"/holder/renewals/{renewal_id}"
    row = visitor.session_row()
    assert (row.kind, row.subject, json.loads(row.data)) == ("holder", "p1-notice",
                                                             {"via": "notice", "renewals": [renewal_id]})

    replayed = Visitor(ra_process).get(link)
    assert replayed.status_code == 403 and "This link is not valid" in replayed.text
    assert api_status(ra_process, renewal_id, token) == 401  # spent for the JSON API too
    log = ra_process.log.read_text()
    assert f"GET /notice/{renewal_id}/" in log  # the requests are logged, the token masked
    assert token not in log and code not in log


def test_guesses_sent_at_once_get_no_more_than_a_code_s_attempts(ra_process, inbox, core):
    _, link, _ = noticed(ra_process, inbox, core, "p1-guesses")
    visitor = Visitor(ra_process)
    assert visitor.get(link).status_code == 303
    visitor.get("/notice")
    seen = len(inbox.messages)
    assert visitor.post("/notice", {"action": "send"}).status_code == 303
    code = SIGN_IN_CODE.search(inbox.wait_for(KUAN.emails[0], "Sign-in code", seen).get_content()).group(1)
    visitor.get("/notice")
    # 8 wrong guesses at once in one session (code_attempts is 5, code_failures 10): each request
    # reads the session before any other writes it back.
    wrongs = [f"{(int(code) + k) % 1_000_000:06d}" for k in range(1, 9)]
    with concurrent.futures.ThreadPoolExecutor(len(wrongs)) as pool:
        answers = list(pool.map(lambda guess: visitor.post("/notice", {"action": "verify", "code": guess}), wrongs))
    assert {answer.status_code for answer in answers} == {400}
    weighed = sum("The code is not the one sent." in answer.text for answer in answers)
    used_up = sum("Too many wrong codes; ask for a new one." in answer.text for answer in answers)
    assert (weighed, used_up) == (5, 3)
    right = visitor.post("/notice", {"action": "verify", "code": code})  # the code is used up, even right
    assert right.status_code == 400 and "Too many wrong codes; ask for a new one." in right.text


def test_a_new_link_by_e_mail_address(ra_process, inbox, core):
    renewal_id, link, token = noticed(ra_process, inbox, core, "p1-new-link")
    visitor = Visitor(ra_process)
    visitor.get("/notice/new-link")
    unknown = visitor.post("/notice/new-link", {"address": "nobody@example.mo", "captcha": visitor.captcha()})
    seen = len(inbox.messages)
    visitor.get("/notice/new-link")  # the form's page makes a new captcha challenge
    known = visitor.post("/notice/new-link", {"address": KUAN.emails[1].upper(), "captcha": visitor.captcha()})
    assert unknown.status_code == known.status_code == 200
    strip = re.compile(r'name="csrf_token" value="[^"]+"')
    assert strip.sub("", unknown.text) == strip.sub("", known.text)  # the same answer either way
    new_link = link_sent(inbox, KUAN.emails[1], renewal_id, seen)  # every open renewal listing it gets one
    assert new_link.group(4) != token
    assert Visitor(ra_process).get(link).status_code == 403  # the link before stops working
    assert Visitor(ra_process).get(new_link.group(2)).status_code == 303


def test_a_session_without_a_link_is_sent_to_the_new_link_page(ra_process):
    visitor = Visitor(ra_process)
    page = visitor.get("/notice")
    assert page.status_code == 400 and "/notice/new-link" in page.text
    assert visitor.get("/notice/0123456789abcdef0123456789abcdef/not-a-token").status_code == 403


def test_new_links_are_rate_limited_per_e_mail_address_once_past_the_captcha(ra_process):
    junk = Visitor(ra_process)
    junk.get("/notice/new-link")
    for _ in range(12):  # wrong captchas: they do not use up the address's attempts
        assert junk.post("/notice/new-link", {"address": "p1-limit@example.mo", "captcha": "WRONG"}).status_code == 400
    visitor = Visitor(ra_process)
    statuses = []
    for _ in range(11):
        visitor.get("/notice/new-link")
        statuses.append(visitor.post("/notice/new-link", {"address": "p1-limit@example.mo",
                                                          "captcha": visitor.captcha()}).status_code)
    assert statuses[:10] == [200] * 10 and statuses[10] == 429


# The core away

@contextlib.contextmanager
def served(app):
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            thread.join(0.01)
        try:
            yield f"http://127.0.0.1:{listening.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(30)


def test_the_core_away_gets_a_page_that_says_try_later(tmp_path):
    from signserver.ra import server

    settings = RaSettings(state_dir=tmp_path)  # no client certificate yet: the core cannot be reached
    workflow, database = server.build_workflow(settings, SystemClock())
    try:
        app, _ = server.build_site(settings, SystemClock(), workflow, database, server.CoreConnection(settings))
        with served(app) as base:
            visitor = Visitor(SimpleNamespace(base=base, database=settings.database))
            changed = change(visitor, "p1-away", PASSWORD)
            assert changed.status_code == 503 and "Please try again later." in changed.text
            signed = sign_in(visitor, "p1-away", PASSWORD, "123456")
            assert signed.status_code == 503 and "Please try again later." in signed.text
            # A holder signed in before the core went away: its standing cannot be asked, so the
            # page says so and the session is kept (an outage signs nobody out).
            store = SessionStore(database, SystemClock(), settings)
            session = store.new()
            session.kind, session.subject, session.signed_in_at = "holder", "p1-away", store.now()
            session.data, session.wanted = {"via": "account", "password_set": 1_800_000_000}, True
            store.save(session)
            visitor.cookies["ra_session"] = session.session_id
            away = visitor.get("/holder")
            assert away.status_code == 503 and "Please try again later." in away.text
            assert visitor.session_row().kind == "holder"
    finally:
        database.close()
