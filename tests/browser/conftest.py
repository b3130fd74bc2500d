"""The browser tests' harness: the RA's pages in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium; nothing is downloaded when the tests run) against a running
stack: a served core, the reference registry, an SMTP inbox and `signserver ra serve` as its own
process (tests/ra/running.py).

Fixtures: ``stack`` (one per test module), ``browser`` (one Chromium per test module, its cookies
cleared for each test; Accept-Language zh-TW), ``browser_in`` (a Chromium for another language),
and, as fixtures or plain functions of this module, ``check_accessibility`` (axe-core: no WCAG
2.0/2.1 A or AA violation), ``screenshot`` (out/screenshots/NAME.png, the whole page) and
``captcha_answer`` (the challenge of the browser's session, read from the RA's database).

The core runs on ``RealTimeClock``: the RA process and the browser live in real time, and the core
checks the RA's requests against its own time. Every test here is marked ``browser``."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import sqlalchemy
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from signserver.clock import SystemClock
from signserver.ra.store.schema import web_sessions
from tests.ca.conftest import ca_service  # noqa: F401 (a fixture: a CA on the test token)
from tests.ca.test_certificate_service import served  # noqa: F401 (a fixture: that CA served over mutual TLS)
from tests.ra.conftest import KUAN, registry  # noqa: F401 (a fixture: the reference registry on loopback)
from tests.ra.running import (PASSWORD, application_document, confirm_with_notice, create_account, issue, post,
                              ra_command, register, remember_token, start_ra, stop, verify_identity)
from tests.ra.running import core, eid, inbox, ra_files  # noqa: F401 (fixtures)
from tests.browser.axe import check_accessibility as _check_accessibility

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "out" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEFAULT_LANGUAGES = "zh-TW,zh"
WINDOW = (1280, 900)
PAGE_SECONDS = 30  # the longest a page may take to load
OTP_STEP_SECONDS = 30
NOTICE_LINK = re.compile(r"https?://[^\s<>\"]+/notice/[^\s<>\"]+")

# Selenium Manager (which would download a driver or a browser) is never asked: the driver's path is
# given, and it is told it is offline should anything reach it.
os.environ["SE_OFFLINE"] = "true"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.path)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


# --- time -------------------------------------------------------------------------------------


class RealTimeClock:
    """The real time, moved forward by hand where a test needs a later moment (``advance``).

    The core's clock here: the RA process and the browser run in real time, and the core refuses an
    RA request whose time is more than 5 minutes from its own, so keep the advances small."""

    def __init__(self):
        self._offset = datetime.timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime.datetime:
        with self._lock:
            return datetime.datetime.now(datetime.timezone.utc) + self._offset

    def advance(self, **delta) -> None:
        """Move forward by ``datetime.timedelta(**delta)``."""
        with self._lock:
            self._offset += datetime.timedelta(**delta)


@pytest.fixture(scope="module")
def ca_clock() -> RealTimeClock:
    """The core's clock (in place of the CA tests' ManualClock)."""
    return RealTimeClock()


class Authenticator:
    """An authenticator app holding an OTP seed: ``code()`` (or calling it) gives a code the
    checker accepts now and has not seen yet (a code is accepted once; the checkers accept the
    current 30-second step and one either side).

    With a clock that moves by hand (``advance``: the core's), a third code within one step moves
    that clock on by a step; with the real clock (the RA's, for operators) it waits for the next
    step instead, so an operator signing in more than twice in 30 seconds waits."""

    def __init__(self, seed: str, clock):
        self.seed = seed
        self._clock = clock
        self._last_step: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, otp_uri: str, clock) -> "Authenticator":
        return cls(parse_qs(urlparse(otp_uri).query)["secret"][0], clock)

    def code(self) -> str:
        with self._lock:
            current = int(self._clock.now().timestamp()) // OTP_STEP_SECONDS
            # The current step, not the one before: the code stays good should the step end
            # while the browser types it.
            step = current if self._last_step is None else max(current, self._last_step + 1)
            if step > current + 1:
                if hasattr(self._clock, "advance"):
                    self._clock.advance(seconds=OTP_STEP_SECONDS * (step - current - 1))
                else:  # the RA's real time cannot be moved: wait for the step that accepts this code
                    time.sleep((step - 1) * OTP_STEP_SECONDS - self._clock.now().timestamp() + 0.05)
            self._last_step = step
            return pyotp.TOTP(self.seed).generate_otp(step)

    __call__ = code


# --- the running stack ------------------------------------------------------------------------


@dataclass
class TestHolder:
    """A holder with a cloud-signature (or other) account in the core and a record in the RA."""

    __test__ = False  # not a test class

    account: str
    password: str = field(repr=False)
    otp: Authenticator = field(repr=False)  # holder.otp() -> a fresh code the core accepts
    recovery_code: str = field(repr=False)
    emails: tuple[str, ...]
    certificate: object  # the CertificateRecord issued (serial, profile, not_after, ...)

    @property
    def serial(self) -> str:
        return self.certificate.serial


@dataclass
class OpenedRenewal:
    """A renewal the operator confirmed: its id, the RA's view of it and the notice e-mail's text."""

    id: str
    shown: dict
    notice: str

    @property
    def link(self) -> str:
        """The notice e-mail's single-use link (http://.../notice/ID/TOKEN)."""
        return notice_link(self.notice)


@dataclass
class TestOperator:
    """An operator account of the RA's pages (`signserver ra operator add`)."""

    __test__ = False

    name: str
    password: str = field(repr=False)
    otp: Authenticator = field(repr=False)


def notice_link(message: str) -> str:
    """The link to /notice/... in an e-mail's text. Raises: AssertionError: there is none."""
    found = NOTICE_LINK.search(message)
    assert found, f"no /notice/ link in the e-mail:\n{message}"
    return found.group(0)


class Stack:
    """A served core, the reference registry, an SMTP inbox and the RA process serving its pages at
    ``ra_url`` (http://localhost:PORT: a browser keeps Secure cookies there on plain HTTP)."""

    def __init__(self, ra, inbox, core, clock, registry, ca_service):
        self.ra = ra  # the process: .base, .config, .env, .database, .log
        self.ra_url: str = ra.public_url
        self.inbox = inbox  # .messages, .wait_for(recipient, subject_part, after)
        self.core = core  # CertificateClient, the RA's role
        self.clock = clock  # the core's RealTimeClock
        self.registry = registry
        self.ca_service = ca_service  # the core's service itself (for what no RA may do)
        self._database = sqlalchemy.create_engine(ra.database)

    def url(self, path: str = "/") -> str:
        return self.ra_url + path

    def command(self, *arguments: str, input: str | None = None) -> dict | list:
        """`signserver ra --json ARGUMENTS` (as operator "dsaj-operator")."""
        return ra_command(self.ra, *arguments, input=input)

    def new_holder(self, profile: str = "cloud-signature-government", *, prefix: str = "web",
                   emails: tuple[str, ...] = KUAN.emails, password: str = PASSWORD) -> TestHolder:
        """A new account in the core (KUAN's identity, ``emails``) with one certificate of
        ``profile``, and the RA's record of its holder."""
        account = f"{prefix}-{uuid.uuid4().hex[:10]}"
        created = create_account(self.core, account, password, emails)
        certificate = issue(self.core, account, profile)
        register(self.ra, account, emails)
        return TestHolder(account=account, password=password, otp=Authenticator.from_uri(created.otp_uri, self.clock),
                          recovery_code=created.recovery_code, emails=emails, certificate=certificate)

    def open_renewal(self, holder: TestHolder) -> OpenedRenewal:
        """The operator confirms the renewal of the holder's certificate; the notice e-mail to the
        holder's first address goes out at once."""
        shown, notice = confirm_with_notice(self.ra, self.inbox, holder.serial, holder.emails[0])
        remember_token(shown["id"], notice)  # for the steps taken over the JSON API below
        return OpenedRenewal(id=shown["id"], shown=shown, notice=notice)

    # To bring a renewal to a later step without the pages (a test of that step's page):

    def verify_identity(self, holder: TestHolder, renewal: OpenedRenewal) -> dict:
        """Consent, e-mail codes, registry, photo and agreement over the JSON API: the renewal then
        awaits its application. Returns the renewal as the API shows it."""
        return verify_identity(self.ra, self.inbox, renewal.id, holder.emails)

    def sign_application(self, holder: TestHolder, renewal: OpenedRenewal) -> dict:
        """The holder signs the application with the cloud-signature password and a fresh OTP, over
        the JSON API: the renewal then awaits its activation. Returns it as the API shows it."""
        application_document(self.ra, renewal.id)
        signed = post(self.ra, f"/renewals/{renewal.id}/application/sign",
                      json={"password": holder.password, "otp": holder.otp()})
        assert signed.status_code == 200, signed.text
        return signed.json()

    def new_operator(self, name: str | None = None, password: str = "Operator-pass-1") -> TestOperator:
        """A new operator account (its OTP checked by the RA, on the real time)."""
        name = name or f"operator-{uuid.uuid4().hex[:8]}"
        added = self.command("operator", "add", name, "--secrets-fd", "0", input=password + "\n")
        return TestOperator(name=name, password=password, otp=Authenticator.from_uri(added["otp_uri"], SystemClock()))

    def mails_seen(self) -> int:
        """How many e-mails the inbox holds: pass it as ``after`` to wait only for later ones."""
        return len(self.inbox.messages)

    def email_code(self, address: str, after: int, subject_part: str = "Verification code") -> str:
        """The 6-digit code of the first e-mail to ``address`` after the ``after``-th."""
        text = self.inbox.wait_for(address, subject_part, after).get_content()
        return re.search(r"\b(\d{6})\b", text).group(1)

    def web_session(self, browser) -> dict | None:
        """The row of ra_web_sessions for the browser's ``ra_session`` cookie (kind, subject,
        data decoded), or None (no cookie, or no row)."""
        cookie = browser.get_cookie("ra_session")
        if not cookie:
            return None
        id_hash = hashlib.sha256(cookie["value"].encode("ascii")).hexdigest()
        with self._database.connect() as conn:
            row = conn.execute(sqlalchemy.select(web_sessions).where(web_sessions.c.id_hash == id_hash)).first()
        if row is None:
            return None
        found = dict(row._mapping)
        found["data"] = json.loads(found["data"] or "{}")
        return found

    def close(self) -> None:
        self._database.dispose()


@pytest.fixture(scope="module")
def stack(served, ra_files, registry, inbox, core, ca_clock, ca_service, tmp_path_factory):  # noqa: F811
    process = start_ra(tmp_path_factory.mktemp("ra-web"), served, ra_files, registry, inbox)
    running = Stack(process, inbox, core, ca_clock, registry, ca_service)
    try:
        yield running
    finally:
        running.close()
        stop(process)


# --- the browser ------------------------------------------------------------------------------


def chromium(languages: str = DEFAULT_LANGUAGES) -> webdriver.Chrome:
    """A headless Chromium (Debian's, through its chromedriver), 1280x900, asking for pages in
    ``languages`` (Accept-Language and navigator.languages). Close it with ``close_chromium``.

    Its temporary files go to a folder of its own, which ``close_chromium`` removes: Chromium
    leaves a folder in the temporary directory at every quit. The folder's path is short, for
    Chromium's socket in it (a Unix socket's path has at most 107 bytes; in pytest's folder of a
    test, Chromium did not start).

    Raises: pytest.fail: chromium or chromium-driver is not installed (`make install` installs them).
    """
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make install`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                     "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps",
                     "--password-store=basic", "--disable-features=Translate,OptimizationHints,MediaRouter"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": languages,
                                              "credentials_enable_service": False,
                                              "profile.password_manager_enabled": False})
    folder = tempfile.mkdtemp(prefix="chromium-")
    service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TMPDIR": folder})
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    driver.temporary_folder = folder
    driver.set_page_load_timeout(PAGE_SECONDS)
    driver.set_script_timeout(PAGE_SECONDS)
    return driver


def close_chromium(driver: webdriver.Chrome) -> None:
    """Quit ``chromium()``'s browser and remove its temporary folder."""
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.temporary_folder, ignore_errors=True)


def fresh(driver: webdriver.Chrome) -> webdriver.Chrome:
    """``driver`` on a blank page with no cookies: a new visitor (the pages keep their state in
    the server's session, whose id is the only cookie)."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    return driver


@pytest.fixture(scope="module")
def _chromiums():
    """The module's Chromiums, one per language asked for, closed when the module ends."""
    started: dict[str, webdriver.Chrome] = {}

    def get(languages: str) -> webdriver.Chrome:
        if languages not in started:
            started[languages] = chromium(languages)
        return started[languages]

    yield get
    for driver in started.values():
        close_chromium(driver)


@pytest.fixture
def browser(_chromiums) -> webdriver.Chrome:
    """The module's Chromium (Accept-Language zh-TW), as a new visitor."""
    return fresh(_chromiums(DEFAULT_LANGUAGES))


@pytest.fixture
def browser_in(_chromiums):
    """``browser_in("pt")`` or ``browser_in("en-US,en")``: a Chromium asking for pages in that
    language, as a new visitor (one per language and module)."""
    return lambda languages: fresh(_chromiums(languages))


def press_and_wait(browser, button) -> None:
    """Click ``button`` (a form's submit button) and wait until the page it loads is complete.

    The old document is marked before the click, and the wait is for a document without the mark.
    Waiting for the button to go stale instead is racy: while Chromium replaces the document, a
    question about one of the old document's nodes may fail with a generic error ("Node with given
    id does not belong to the document") rather than a stale-element one, so every WebDriver error
    during the wait means "not there yet".
    Raises: selenium.common.TimeoutException."""
    browser.execute_script("window.__leaving = true")
    button.click()
    WebDriverWait(browser, PAGE_SECONDS, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script("return window.__leaving !== true && document.readyState === 'complete'"))


def wait_until(browser, condition, timeout: float = PAGE_SECONDS, message: str = ""):
    """WebDriverWait(browser, timeout).until(condition): the condition's first true value.
    Raises: selenium.common.TimeoutException."""
    return WebDriverWait(browser, timeout).until(condition, message)


# --- what the tests check and keep ----------------------------------------------------------


def check_accessibility(browser, context: str | None = None) -> None:
    """axe-core finds no violation of WCAG 2.0/2.1 A or AA in the page (or its part ``context``).
    Raises: AssertionError listing each rule's id, impact and nodes."""
    _check_accessibility(browser, context)


def screenshot(browser, name: str) -> Path:
    """The whole page (its full height) as out/screenshots/NAME.png; returns the path.

    Raises: selenium.common.TimeoutException: the page has no height after 10 s."""
    def content_size(_):
        # Chromium may report a page it has just loaded as 0 high until its first layout, and
        # refuses to capture that.
        metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        return size if size["height"] > 0 else None
    size = WebDriverWait(browser, 10, poll_frequency=0.05).until(content_size, f"{name}: the page has no height")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": max(size["width"], WINDOW[0]), "height": size["height"], "scale": 1}})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def captcha_answer(stack: Stack, browser, timeout: float = 10) -> str:
    """The answer to the captcha the browser's session shows (the page with its image loaded),
    read from the RA's database: the cookie ``ra_session`` -> its SHA-256 -> the row of
    ra_web_sessions -> data["captcha"]["answer"].

    Raises: selenium.common.TimeoutException: no challenge within ``timeout`` seconds."""
    def answer(_):
        session = stack.web_session(browser)
        challenge = (session or {}).get("data", {}).get("captcha")
        return challenge.get("answer") if isinstance(challenge, dict) else None
    return wait_until(browser, answer, timeout, "no captcha in the browser's session")


@pytest.fixture(name="check_accessibility")
def check_accessibility_fixture():
    return check_accessibility


@pytest.fixture(name="screenshot")
def screenshot_fixture():
    return screenshot


@pytest.fixture(name="captcha_answer")
def captcha_answer_fixture():
    return captcha_answer

