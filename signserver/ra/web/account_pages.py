"""The holder's account pages: the password change of document 000 (/password), the sign-in with
the cloud-signature account (/sign-in: account, password, OTP), and the sign-in through the
renewal notice's link and an e-mail code (/notice/...; signserver.ra.holder_sign_in).

The core checks every factor (the RA stores no holder password) and says nothing of which one was
wrong; nor do these pages. A password is never echoed back into a page, logged, or kept. Each form
is rate-limited per client address, and the public ones ask for a captcha, checked first: a
submission spends the challenge whatever else is wrong (the image the next page loads is a new one).
Attempts are counted per account only once the captcha passed, so junk posts naming someone else's
account cannot lock that holder out of these forms."""

from __future__ import annotations

import logging
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from signserver.client import (AccountLocked, AuthenticationRefused, InvalidArgument, PermissionRefused, ServerBusy,
                               SignServerClientError)
from signserver.clock import epoch_seconds
from signserver.ra.errors import CoreUnavailable, HolderNotAuthorised, SignInCodeRefused, StepRefused, core_unavailable
from signserver.ra.holder_sign_in import HolderSignIn, NoticeShown, NoticeSignIn, mask_address
from signserver.ra.renewal import check_new_password
from signserver.ra.web.rendering import (FieldReader, field_errors, flash, gettext, local_path, page_route,
                                        provider_of, read_form, redirect, render)
from signserver.ra.web.sessions import HOLDER, session_of, sign_in, sign_out

log = logging.getLogger(__name__)

MAX_ACCOUNT = 64  # the core's limit: a longer name is no account
MAX_FIELD = 256  # read up to this much, to say which rule a longer value breaks
MAX_ADDRESS = 320
CODE = re.compile(r"[0-9]{6}")  # ASCII digits: \d takes any script's
OTP = re.compile(r"[0-9]{6,8}")
# The password rules of the documents (renewal.check_new_password) and of the core, by the reason
# each names the broken one with.
PASSWORD_RULES = frozenset({"confirmation_differs", "too_short", "too_long", "no_letter", "no_non_letter",
                            "contains_account", "common", "unchanged"})
NOTICE_KEY = "notice"  # the session's data key of the followed link (NoticeSignIn.to_data)
HOLDER_HOME = "/holder"


# Helpers


def password_rule_text(request: Request, rule: str | None) -> tuple[str, str]:
    """The field and the sentence for a broken password rule: the reason of
    renewal.check_new_password's refusal, or the core's (InvalidArgument.rule)."""
    if rule == "confirmation_differs":
        return "confirmation", gettext(request, "The confirmation is not the same as the new password.")
    messages = {
        "too_short": gettext(request, "The new password needs at least 8 characters."),
        "too_long": gettext(request, "The new password is too long."),
        "no_letter": gettext(request, "The new password needs at least one letter."),
        "no_non_letter": gettext(request, "The new password needs at least one character that is not a letter."),
        "contains_account": gettext(request, "The new password may not contain the account name."),
        "common": gettext(request, "The new password is too common and easy to guess; choose another."),
        "unchanged": gettext(request, "The new password must differ from the current one."),
    }
    return "new_password", messages.get(rule or "", gettext(request, "The service refused the new password."))


def locked_text(request: Request) -> str:
    """The lockout sentence of document 000, in its exact words, in the request's language: the
    one every holder page shows for a locked account."""
    return gettext(request, "More than 5 times have been tried, please try again 30 minutes later.")


def _refused(request: Request) -> str:
    # One sentence whatever was wrong: the account, the password or the one-time password.
    return gettext(request, "The account name, the password or the one-time password is not right.")


def _unavailable(request: Request) -> Response:
    return render(request, "account/unavailable.html", status=503)


async def _captcha_and_account_errors(request: Request, ctx, answer: str, account: str) -> dict[str, str]:
    """The errors, by field, of the captcha's ``answer`` (the check spends the challenge, right or
    wrong) and of the account name."""
    errors: dict[str, str] = {}
    if not await run_in_threadpool(ctx.captcha.check, session_of(request), answer):
        errors["captcha"] = gettext(request, "The captcha code is not right; type the characters of the new image.")
    if not account:
        errors["account"] = gettext(request, "Enter the account name.")
    elif len(account) > MAX_ACCOUNT:
        errors["account"] = gettext(request, "An account name has at most 64 characters.")
    return errors


def _with_field_errors(request: Request, errors: dict[str, str], fields: FieldReader) -> dict[str, str]:
    """``errors`` with, on each field ``fields`` refused (too long, a control character, not text),
    what is wrong with it in its place: the page's own check of an empty field says less. An
    account name too long is said with the core's limit, not the most the page reads."""
    errors = {**errors, **field_errors(request, fields)}
    problem = fields.problems.get("account")
    if problem is not None and problem.reason == "too_long":
        errors["account"] = gettext(request, "An account name has at most 64 characters.")
    return errors


# /password (document 000)

def _password_page(request: Request, *, account: str = "", errors: dict | None = None, status: int = 200,
                   alert: str = "") -> Response:
    return render(request, "account/password.html", status=status, account=account, errors=errors or {},
                  alert=alert)


async def password(request: Request, ctx) -> Response:
    """Document 000's form: the captcha first (spent by every submission), the documents' rules,
    then the core (CertificateService.ChangeHolderPassword, through the RA's own certificate: no
    OTP, as the documents' page asks none); the core e-mails the holder on success."""
    if request.method == "GET":
        return _password_page(request)
    form = await read_form(request)
    fields = FieldReader(form)
    account = fields.text("account", max_length=MAX_FIELD)
    current, new, confirmation = (fields.secret(name) for name in ("current_password", "new_password",
                                                                   "confirmation"))
    answer = fields.text("captcha", max_length=32)
    ctx.limits.check(request, "password")
    errors = await _captcha_and_account_errors(request, ctx, answer, account)
    if not current:
        errors["current_password"] = gettext(request, "Enter the current password.")
    if not {"new_password", "confirmation"} & fields.problems.keys():  # else said on the field at fault
        try:
            check_new_password(new, confirmation)
        except StepRefused as exc:
            field, message = password_rule_text(request, exc.reason)
            errors[field] = message
    errors = _with_field_errors(request, errors, fields)
    if errors:  # the form again, each error on its field, the account as typed (never a password)
        return _password_page(request, account=fields.typed.get("account", account), errors=errors, status=400)
    ctx.limits.check_account(request, "password", account)  # past the captcha: see the module's note
    try:
        await run_in_threadpool(ctx.certificates.change_password, account, current, new, confirmation)
    except AccountLocked:
        return _password_page(request, account=account, status=423, alert=locked_text(request))
    except AuthenticationRefused:
        return _password_page(request, account=account, status=400,
                              alert=gettext(request, "The account name or the password is not right."))
    except InvalidArgument as exc:
        field, message = password_rule_text(request, exc.rule)
        return _password_page(request, account=account, errors={field: message}, status=400)
    except PermissionRefused:
        return _password_page(request, account=account, status=403,
                              alert=gettext(request, "This account's password cannot be changed here; please "
                                                     "contact %(provider)s.", provider=provider_of(request)))
    except (ServerBusy, CoreUnavailable):
        return _unavailable(request)
    except SignServerClientError as exc:
        if core_unavailable(exc):
            return _unavailable(request)
        log.info("a password change was refused by the core: %s", type(exc).__name__)
        return _password_page(request, account=account, status=400,
                              alert=gettext(request, "The password was not changed; please try again."))
    # A thief's sessions end with the password: every holder session of the account, this one too.
    await run_in_threadpool(ctx.sessions.end_sessions, HOLDER, account)
    session = session_of(request)
    if session.kind == HOLDER and session.subject == account:
        sign_out(request)
    return render(request, "account/password_changed.html")


# /sign-in (the cloud-signature account)

def _sign_in_page(request: Request, *, account: str = "", after: str = HOLDER_HOME, errors: dict | None = None,
                  status: int = 200, alert: str = "") -> Response:
    return render(request, "account/sign_in.html", status=status, account=account, after=after,
                  errors=errors or {}, alert=alert)


async def account_sign_in(request: Request, ctx) -> Response:
    """Account, password, OTP and captcha; the core checks the factors (counted toward its
    lockout); then a holder session under a new id and a 303 to ``next`` (a path of this site)."""
    if request.method == "GET":
        return _sign_in_page(request, after=local_path(request.query_params.get("next"), HOLDER_HOME))
    form = await read_form(request)
    fields = FieldReader(form)
    account = fields.text("account", max_length=MAX_FIELD)
    secret = fields.secret("password")
    otp = fields.text("otp", max_length=16)
    answer = fields.text("captcha", max_length=32)
    after = local_path(fields.text("next", max_length=512), HOLDER_HOME)
    fields.problems.pop("next", None)  # a hidden field, not the holder's to put right: home instead
    ctx.limits.check(request, "sign-in")
    errors = await _captcha_and_account_errors(request, ctx, answer, account)
    if not secret:
        errors["password"] = gettext(request, "Enter the password.")
    if not OTP.fullmatch(otp):
        errors["otp"] = gettext(request, "Enter the one-time password of your OTP app (6 digits).")
    errors = _with_field_errors(request, errors, fields)
    if errors:  # the form again, each error on its field, the account as typed (never a factor)
        return _sign_in_page(request, account=fields.typed.get("account", account), after=after, errors=errors,
                             status=400)
    ctx.limits.check_account(request, "sign-in", account)  # past the captcha: see the module's note
    try:
        identity = await run_in_threadpool(ctx.certificates.authenticate_holder, account, secret, otp)
    except AccountLocked:
        return _sign_in_page(request, account=account, after=after, status=423, alert=locked_text(request))
    except (AuthenticationRefused, InvalidArgument):
        return _sign_in_page(request, account=account, after=after, status=400, alert=_refused(request))
    except PermissionRefused:
        return _sign_in_page(request, account=account, after=after, status=403,
                             alert=gettext(request, "This account cannot sign in; please contact "
                                                    "%(provider)s.", provider=provider_of(request)))
    except (ServerBusy, CoreUnavailable):
        return _unavailable(request)
    except SignServerClientError as exc:
        if core_unavailable(exc):
            return _unavailable(request)
        log.info("a holder sign-in was refused by the core: %s", type(exc).__name__)
        return _sign_in_page(request, account=account, after=after, status=400, alert=_refused(request))
    # The password signed in with: every later page asks the core whether it is still the account's.
    password_set = epoch_seconds(identity.password_changed_at) if identity.password_changed_at else None
    sign_in(request, "holder", identity.account, via="account", password_set=password_set)
    return redirect(after)


# /notice/... (the notice e-mail's link and an e-mail code)

def _holder_sign_in(ctx) -> HolderSignIn:
    """The notice sign-in's steps (made once at start: server.build_web_context)."""
    if ctx.holder_sign_in is None:
        raise CoreUnavailable("the notice sign-in is not set up in this RA")
    return ctx.holder_sign_in


def _link_not_valid(request: Request) -> Response:
    return render(request, "account/link_not_valid.html", status=403)


async def follow_link(request: Request, ctx) -> Response:
    """The link of the notice e-mail: checks it and remembers it in the session; spends nothing
    (mail scanners fetch links). The redirect takes the token out of the address bar."""
    renewal_id, token = request.path_params["renewal_id"], request.path_params["token"]
    try:
        pending = await run_in_threadpool(_holder_sign_in(ctx).follow_link, renewal_id, token)
    except HolderNotAuthorised:
        return _link_not_valid(request)
    session_of(request).set(NOTICE_KEY, pending.to_data())
    return redirect("/notice")


def _notice_page(request: Request, shown: NoticeShown, *, errors: dict | None = None, status: int = 200) -> Response:
    return render(request, "account/notice.html", status=status,
                  addresses=[mask_address(a) for a in shown.addresses], code_sent=shown.code_expires is not None,
                  code_expires=shown.code_expires, errors=errors or {})


async def notice(request: Request, ctx) -> Response:
    """After the link: "send me a code" (action=send) e-mails a code to the notice's addresses
    (shown masked); the right code (action=verify) spends the link and signs the holder in for
    that renewal alone."""
    session = session_of(request)
    pending = NoticeSignIn.from_data(session.get(NOTICE_KEY))
    if pending is None:
        return render(request, "account/notice_none.html", status=400)
    service = _holder_sign_in(ctx)
    try:
        shown = await run_in_threadpool(service.shown, pending)
    except HolderNotAuthorised:
        session.pop(NOTICE_KEY)
        return _link_not_valid(request)
    if request.method == "GET":
        return _notice_page(request, shown)
    form = await read_form(request)
    fields = FieldReader(form)
    action = fields.text("action", max_length=16)  # a hidden field: anything but "send" verifies
    ctx.limits.check(request, "notice", pending.renewal_id)
    if action == "send":
        try:
            pending = await run_in_threadpool(service.send_code, pending)
        except SignInCodeRefused as exc:
            return _notice_page(request, shown, status=400, errors={"code": _code_refusal(request, exc)})
        except HolderNotAuthorised:
            session.pop(NOTICE_KEY)
            return _link_not_valid(request)
        session.set(NOTICE_KEY, pending.to_data())
        flash(request, gettext(request, "A code was sent by e-mail. Type it below."), "success")
        return redirect("/notice")
    code = fields.text("code", max_length=16)
    if "code" in fields.problems:  # too long or not text: said on the field
        return _notice_page(request, shown, status=400, errors={"code": field_errors(request, fields)["code"]})
    if not CODE.fullmatch(code):
        return _notice_page(request, shown, status=400,
                            errors={"code": gettext(request, "Enter the 6-digit code of the e-mail.")})
    try:
        renewal = await run_in_threadpool(service.verify, pending, code)
    except SignInCodeRefused as exc:  # the attempt is counted in the database
        return _notice_page(request, shown, status=400, errors={"code": _code_refusal(request, exc)})
    except HolderNotAuthorised:
        session.pop(NOTICE_KEY)
        return _link_not_valid(request)
    sign_in(request, "holder", renewal.account, via="notice", renewals=[renewal.id])
    return redirect(f"/holder/renewals/{renewal.id}")


def _code_refusal(request: Request, exc: SignInCodeRefused) -> str:
    """The refusal of a sign-in code in the request's language."""
    texts = {
        "too_soon": gettext(request, "A code was sent less than a minute ago: use it, or wait a minute."),
        "blocked": gettext(request, "Too many codes were asked or typed wrong for this renewal; please contact "
                                    "%(provider)s.", provider=provider_of(request)),
        "expired": gettext(request, "The code has expired; ask for a new one."),
        "used_up": gettext(request, "Too many wrong codes; ask for a new one."),
        "none": gettext(request, "No code was sent yet; ask for one."),
    }
    return texts.get(exc.reason, gettext(request, "The code is not the one sent."))


async def new_link(request: Request, ctx) -> Response:
    """A new notice link by e-mail address; the page answers the same whether or not a renewal
    awaits the address."""
    if request.method == "GET":
        return render(request, "account/new_link.html", address="", errors={})
    form = await read_form(request)
    fields = FieldReader(form)
    address = fields.text("address", max_length=MAX_ADDRESS)
    answer = fields.text("captcha", max_length=32)
    ctx.limits.check(request, "new-link")
    errors: dict[str, str] = {}
    if not await run_in_threadpool(ctx.captcha.check, session_of(request), answer):
        errors["captcha"] = gettext(request, "The captcha code is not right; type the characters of the new image.")
    if "@" not in address:
        errors["address"] = gettext(request, "Enter the e-mail address the notice was sent to.")
    errors.update(field_errors(request, fields))  # too long or not text: said on the field
    if errors:
        return render(request, "account/new_link.html", status=400, address=fields.typed.get("address", address),
                      errors=errors)
    ctx.limits.check_account(request, "new-link", address.casefold())  # past the captcha: see the module's note
    await run_in_threadpool(_holder_sign_in(ctx).new_link, address)
    return render(request, "account/new_link_sent.html")


def routes() -> list[BaseRoute]:
    return [
        page_route("/password", password, methods=("GET", "POST"), name="password"),
        page_route("/sign-in", account_sign_in, methods=("GET", "POST"), name="sign_in"),
        page_route("/notice", notice, methods=("GET", "POST"), name="notice"),
        page_route("/notice/new-link", new_link, methods=("GET", "POST"), name="notice_new_link"),
        page_route("/notice/{renewal_id:str}/{token:str}", follow_link, name="notice_link"),
    ]
