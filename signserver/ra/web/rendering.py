"""The pages' machinery: page_route (the session, who may see the page, the CSRF check, errors
as pages), render (a template in the request's language), redirect, gettext, flash, and the
forms' readers (forms.py).

A page handler is ``async def handler(request, ctx) -> Response``; its errors become pages here,
in one place (_error_page): an RaError or a core error with its status, never a 500 for what a
client sent."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from signserver.ra import branding, errors
from signserver.ra import help_codes
from signserver.client import NotFound
from signserver.clock import epoch_seconds
from signserver.ra.web import client_certificate, forms
from signserver.ra.web.forms import (BadForm, FieldReader, FormTooLarge, read_form,  # noqa: F401 (the pages' API)
                                    secret_field, text_field)
from signserver.ra.web.i18n import (DEFAULT_LANGUAGE, LANGUAGE_COOKIE, LANGUAGE_NAMES, LANGUAGES, N_, choose_language,
                                    format_moment)
from signserver.ra.web.limits import RateLimited
from signserver.ra.web.security import loggable_path, origin_allowed, origin_of
from signserver.ra.web.sessions import COOKIE, HOLDER, OPERATOR, WebSession, session_of

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
Handler = Callable[[Request, Any], Awaitable[Response]]
SIGN_IN = {HOLDER: "/sign-in", OPERATOR: "/operator/sign-in"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
FLASH_KEY = "_flash"
CERTIFICATE_CHECK_KEY = "_certificate_checked"  # the RA client certificate last found in force, and when
# A revoked RA client certificate keeps an operator's session at most this long (the core is asked
# again, not on every page).
CERTIFICATE_RECHECK_SECONDS = 60
MAX_FLASHES = 5  # the latest, when pages flash and redirect without one being shown

# The request a template is being rendered for: the macros of an imported template (_forms.html)
# see the environment's globals, not the page's values, so the language and the token come from here.
_rendering: contextvars.ContextVar[Request] = contextvars.ContextVar("ra_web_rendering")


class CsrfRefused(errors.RaError):
    """A POST without the session's CSRF token, or from a foreign origin."""


class NotAForm(BadForm):
    """A POST whose body is not the kind of form the page takes (multipart where no file is
    expected): refused before its body is read."""


class PageNotFound(errors.RaError):
    """No page at this address (or the page's object does not exist for this user)."""


class MethodNotAllowed(errors.RaError):
    """The page does not take this method."""


# The pages' errors: the status and the sentence shown (in the request's language). Checked in
# order: subclasses before their bases.
_ERRORS: list[tuple[type[Exception], int, str]] = [
    (FormTooLarge, 413, N_("What you sent is too large.")),
    (NotAForm, 415, N_("The form could not be read. Please go back and try again.")),
    (BadForm, 400, N_("The form could not be read. Please go back and try again.")),
    (CsrfRefused, 403, N_("This form has expired or did not come from this site. Please reload the page and "
                          "try again.")),
    (RateLimited, 429, N_("More than the allowed attempts were made. Please wait a few minutes and try again.")),
    (PageNotFound, 404, N_("There is no such page.")),
    (errors.RenewalNotFound, 404, N_("There is no such page.")),
    (MethodNotAllowed, 405, N_("This page cannot be used this way.")),
    (errors.HolderNotAuthorised, 403, N_("You may not see this page. Please sign in again.")),
    (errors.ConcurrentUpdate, 409, N_("This changed in the meantime. Please reload the page and try again.")),
    (errors.CodeRefused, 422, N_("The code is wrong or has expired.")),
    (errors.PhotoRefused, 422, N_("The photo cannot be used. Please take another one.")),
    (errors.IdentityNotFound, 409, N_("The identity registry holds no such document.")),
    (errors.RegistryUnavailable, 503, N_("A service we depend on is unavailable. Please try again later.")),
    (errors.CoreUnavailable, 503, N_("A service we depend on is unavailable. Please try again later.")),
    (errors.StoreUnavailable, 503, N_("A service we depend on is unavailable. Please try again later.")),
    (errors.SettingsError, 503, N_("A service we depend on is unavailable. Please try again later.")),
    (errors.NotYetImplemented, 501, N_("This is not offered yet.")),
    (errors.Refusal, 409, N_("This cannot be done now.")),
    (errors.RaError, 400, N_("This request cannot be handled.")),
]
INTERNAL_ERROR = N_("Something went wrong on our side. Please try again later.")
TITLES = {400: N_("Bad request"), 403: N_("Request refused"), 404: N_("Page not found"), 405: N_("Not allowed"),
          409: N_("Not possible now"), 413: N_("Too large"), 415: N_("Bad request"), 422: N_("Not accepted"),
          429: N_("Too many attempts"),
          500: N_("Error"), 501: N_("Not offered"), 503: N_("Unavailable")}


# --- languages --------------------------------------------------------------------------------

def language(request: Request) -> str:
    """The request's language tag ("zh-Hant", "pt" or "en")."""
    lang = getattr(request.state, "lang", None)
    if lang is None:
        lang = choose_language(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language", ""))
        request.state.lang = lang
    return lang


def _translations(request: Request):
    return request.app.state.web_context.templates.catalogues[language(request)]


def gettext(request: Request, message: str, **values: Any) -> str:
    """``message`` in the request's language, with ``%(name)s`` filled from ``values``."""
    text = _translations(request).gettext(message)
    return text % values if values else text


# What is wrong with a form's field (forms.BadForm.reason), said on the field.
FIELD_PROBLEMS = {
    "required": N_("This field is required."),
    "not_text": N_("This field takes text only."),
    "control_characters": N_("This field may not contain control characters (such as tabs or line breaks)."),
}


def field_problem_text(request: Request, exc: BadForm) -> str:
    """What is wrong with a form's field (a BadForm of text_field, secret_field or an upload's
    reader), in the request's language."""
    if exc.reason == "too_long":
        return gettext(request, "At most %(most)s characters.", most=exc.limit)
    if exc.reason == "too_large":
        return gettext(request, "The file is too large: at most %(most)s KiB.", most=exc.limit // 1024)
    return gettext(request, FIELD_PROBLEMS.get(exc.reason, FIELD_PROBLEMS["not_text"]))


def field_errors(request: Request, reader: forms.FieldReader) -> dict[str, str]:
    """The errors, by field, of the fields ``reader`` refused (field_problem_text)."""
    return {name: field_problem_text(request, exc) for name, exc in reader.problems.items()}


def ngettext(request: Request, singular: str, plural: str, n: int, **values: Any) -> str:
    """The singular or plural form for ``n`` in the request's language; ``%(num)s`` is ``n``."""
    text = _translations(request).ngettext(singular, plural, n)
    return text % {"num": n, **values}


# --- templates --------------------------------------------------------------------------------

@pass_context
def _template_gettext(context, message: str, **variables: Any) -> str:
    text = _translations(_rendering.get()).gettext(message)
    if context.eval_ctx.autoescape:
        text = Markup(text)  # the values are escaped as they are put in
    return text % variables  # newstyle gettext: always a format string (a literal percent sign is %%)


@pass_context
def _template_ngettext(context, singular: str, plural: str, num: int, **variables: Any) -> str:
    text = _translations(_rendering.get()).ngettext(singular, plural, num)
    if context.eval_ctx.autoescape:
        text = Markup(text)
    return text % {"num": num, **variables}


def _current_csrf_token() -> str:
    return _rendering.get().state.session.csrf_token


# The certificate types and statuses as the documents name them (every page shows these, never
# the profile's identifier alone).
PROFILE_LABELS = {
    "cloud-signature-government": N_("Government cloud-signature account"),
    "cloud-signature-corporate": N_("Corporate cloud-signature account"),
    "qualified-government": N_("Government qualified certificate"),
    "qualified-corporate": N_("Corporate qualified certificate"),
    "standard-government": N_("Government standard certificate"),
    "standard-corporate": N_("Corporate standard certificate"),
    "encryption-government": N_("Government encryption certificate"),
    "encryption-corporate": N_("Corporate encryption certificate"),
}
STATUS_LABELS = {"valid": N_("valid"), "expired": N_("expired"), "revoked": N_("revoked")}


def profile_label(request: Request, profile: str) -> str:
    """The certificate type as the documents name it, in the request's language (an unknown
    profile as it is)."""
    return gettext(request, PROFILE_LABELS[profile]) if profile in PROFILE_LABELS else profile


def status_label(request: Request, status: str) -> str:
    """A certificate's status (valid, expired, revoked) in the request's language."""
    return gettext(request, STATUS_LABELS[status]) if status in STATUS_LABELS else status


def _current_language() -> str:
    return language(_rendering.get())


def _moment(value, format: str = "medium") -> str:
    return format_moment(value, language(_rendering.get()), format)


def _captcha_image_url() -> str:
    """A new captcha challenge for the page being rendered (its form shows it); the image's address."""
    request = _rendering.get()
    challenge = request.app.state.web_context.captcha.new(session_of(request))
    return f"/captcha.png?c={challenge}"


@dataclass
class Templates:
    """The Jinja2 environment (autoescape, jinja2.ext.i18n with newstyle gettext, trimmed blocks)
    and the catalogues (i18n.load_catalogues) it translates with."""

    environment: Environment
    catalogues: dict

    @classmethod
    def create(cls, catalogues: dict, directory: Path = TEMPLATES_DIR) -> "Templates":
        environment = Environment(loader=FileSystemLoader(str(directory)), autoescape=select_autoescape(["html"]),
                                  extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
        environment.policies["ext.i18n.trimmed"] = True
        environment.newstyle_gettext = True  # read by the i18n extension as it compiles {% trans %}
        environment.globals.update(_=_template_gettext, gettext=_template_gettext, ngettext=_template_ngettext,
                                   current_csrf_token=_current_csrf_token, current_language=_current_language,
                                   captcha_image_url=_captcha_image_url,
                                   moment=_moment, LANGUAGE_NAMES=LANGUAGE_NAMES,
                                   profile_label=lambda profile: profile_label(_rendering.get(), profile),
                                   status_label=lambda status: status_label(_rendering.get(), status))
        return cls(environment, catalogues)

    def render(self, request: Request, template: str, values: dict) -> str:
        token = _rendering.set(request)
        try:
            return self.environment.get_template(template).render(values)
        finally:
            _rendering.reset(token)


def guidance(request: Request, code: str) -> str:
    """Help code ``code``'s guidance in the request's language, naming the configured provider
    (help_codes.guidance); "" for no code. The one lookup of the pages."""
    if not code:
        return ""
    return help_codes.guidance(code, language(request), request.app.state.web_context.settings.provider_name)


def provider_of(request: Request) -> str:
    """The provider's name (signserver/ra/branding.py) in the request's language: the value of
    ``%(provider)s`` in the messages that name whom the holder contacts."""
    return branding.provider_name(request.app.state.web_context.settings.provider_name, language(request))


def brand_names(request: Request) -> dict[str, str]:
    """The service's name and the provider's (signserver/ra/branding.py) in the request's language,
    as the templates get them: ``service_name`` and ``provider``."""
    settings = request.app.state.web_context.settings
    return {"service_name": branding.service_name(settings.service_name, language(request)),
            "provider": provider_of(request)}


def render(request: Request, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
    """``template`` rendered for the request. Every template gets: request, session, lang,
    csrf_token, _ / gettext / ngettext (the request's language), moment(datetime), next (the
    current path), flashes (the messages flashed since the last page, shown once), languages,
    service_name and provider (brand_names)."""
    ctx = request.app.state.web_context
    session = session_of(request)
    flashes = session.pop(FLASH_KEY, []) or []
    page = {"request": request, "session": session, "lang": language(request), "csrf_token": session.csrf_token,
            "next": request.url.path, "flashes": flashes, "languages": LANGUAGE_NAMES,
            "signed_in": session.signed_in, **brand_names(request), **values}
    return HTMLResponse(ctx.templates.render(request, template, page), status_code=status)


_LOCAL_PATH = re.compile(r"^/(?![/\\])[^\s\\]*$")


def local_path(path: str | None, default: str = "/") -> str:
    """``path`` when it is a path on this site ("/..." but not "//host" or "/\\host"), else ``default``."""
    if path and _LOCAL_PATH.match(path) and path.isprintable():
        return path
    return default


def redirect(path: str) -> RedirectResponse:
    """A 303 to ``path`` on this site (anything else goes home)."""
    return RedirectResponse(local_path(path), status_code=303)


def flash(request: Request, message: str, kind: str = "info") -> None:
    """``message`` (already translated) shown once on the next page rendered; ``kind``: "info",
    "success" or "error"."""
    session = session_of(request)
    session.set(FLASH_KEY, [*(session.get(FLASH_KEY) or []), [kind, message]][-MAX_FLASHES:])


# --- errors -----------------------------------------------------------------------------------

def _classify(exc: Exception) -> tuple[int, str]:
    for cls, status, message in _ERRORS:
        if isinstance(exc, cls):
            return status, message
    return 500, INTERNAL_ERROR


def _as_ra_error(exc: Exception) -> Exception:
    from signserver.client import SignServerClientError

    if isinstance(exc, SignServerClientError):
        return errors.core_error(exc)
    return exc


def error_page(request: Request, exc: Exception) -> Response:
    """The page for an error that escaped a handler (logged when it is the RA's fault)."""
    exc = _as_ra_error(exc)
    status, message = _classify(exc)
    if status == 500:
        log.error("page %s failed", loggable_path(request.url.path), exc_info=exc)
    code = getattr(exc, "help_code", "") or ""
    title = gettext(request, TITLES.get(status, TITLES[400]))
    try:
        response = render(request, "error.html", status=status, http_status=status, status_title=title,
                          message=gettext(request, message), help_code=code, guidance=guidance(request, code))
    except Exception:  # the error page itself failed: a plain answer rather than none
        log.exception("the error page failed")
        response = HTMLResponse(f"<!doctype html><title>{status}</title><p>{status}</p>", status_code=status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# --- page_route -------------------------------------------------------------------------------

def _own_origins(request: Request, ctx) -> set[str]:
    own = {origin_of(ctx.settings.public_url)}
    host = request.headers.get("host", "")
    if host:
        own.add(origin_of(f"{request.url.scheme}://{host}"))
    return own


@dataclass(frozen=True)
class RouteOptions:
    """What page_route was told about a page beyond its handler."""

    who: str | None = None
    files: bool = False  # the page takes multipart forms (file uploads)
    max_bytes: int = forms.FORM_BYTES  # the largest body read for the CSRF check
    touch: bool = True  # a request counts as the session's use (its idle time starts again)


async def _check_post(request: Request, ctx, session: WebSession, options: RouteOptions) -> None:
    """The Origin, then the media type (before any of the body is read), then the CSRF token:
    from the header, else from the form, read within the route's limit.

    Raises: CsrfRefused (a foreign Origin, a missing or wrong token), NotAForm (multipart to a
    page that takes no file), FormTooLarge, BadForm.
    """
    if not origin_allowed(request.headers.get("origin"), _own_origins(request, ctx)):
        raise CsrfRefused("a form from another site")
    kind = forms.media_type(request)
    if kind == forms.MULTIPART and not options.files:
        raise NotAForm("this page takes no file")
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        if kind not in (forms.MULTIPART, forms.URLENCODED):
            raise CsrfRefused("no CSRF token")
        form = await forms.parse_form(request, options.max_bytes)
        token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not session.csrf_matches(token):
        raise CsrfRefused("the CSRF token is missing or wrong")


async def _operator_standing(request: Request, ctx, session: WebSession) -> str:
    """Whether the operator signed in to ``session`` may still act, asked on every request:
    "active"; "disabled" (OperatorAccounts.is_active: every session of the name ends); for a
    sign-in with an RA client certificate, "elsewhere" when this connection does not present it
    (the session stays, this request is anonymous: a copied cookie alone opens nothing) and
    "revoked" when the core no longer holds it in force (asked again at most every
    CERTIFICATE_RECHECK_SECONDS: this session ends).

    Raises: StoreUnavailable; CoreUnavailable (the certificate's standing cannot be known now).
    """
    is_active = getattr(ctx.operators, "is_active", None)
    if is_active is not None and not await run_in_threadpool(is_active, session.subject):
        return "disabled"
    if session.get("via") != "certificate":
        return "active"
    der = client_certificate.client_certificate_der(request)
    if not der or client_certificate.operator_from_certificate(der, ctx.settings) != session.subject:
        return "elsewhere"
    fingerprint, now = hashlib.sha256(der).hexdigest(), epoch_seconds(ctx.clock.now())
    checked = session.get(CERTIFICATE_CHECK_KEY)
    if (isinstance(checked, dict) and checked.get("sha256") == fingerprint and isinstance(checked.get("at"), int)
            and 0 <= now - checked["at"] < CERTIFICATE_RECHECK_SECONDS):
        return "active"
    if not await run_in_threadpool(client_certificate.certificate_in_force, der, ctx.certificates):
        return "revoked"
    session.set(CERTIFICATE_CHECK_KEY, {"sha256": fingerprint, "at": now})
    return "active"


async def _holder_stands(ctx, session: WebSession) -> bool:
    """Whether the holder signed in to ``session`` with the account's password may go on, asked
    of the core on every request: not once the password has been set again (by whatever route:
    this RA's password page, an application, the unlock with the recovery code, an administrator)
    or the account disabled or gone. A session opened with a notice link rests on its e-mailed
    code, not on the password, and on the renewal it opened: it stands.

    Raises: the client's errors (CoreUnavailable, ServerBusy, ...) but NotFound.
    """
    if session.get("via") == "notice":
        return True
    try:
        standing = await run_in_threadpool(ctx.certificates.holder_standing, session.subject)
    except NotFound:
        return False
    signed_in_with = session.get("password_set")  # account_sign_in's: epoch seconds
    return (not standing.disabled and standing.password_changed_at is not None
            and isinstance(signed_in_with, int) and epoch_seconds(standing.password_changed_at) == signed_in_with)


async def serve_page(request: Request, handler: Handler, who: str | None = None,
                     options: RouteOptions | None = None) -> Response:
    """Run ``handler`` as a page: load the session, check who may see it (an operator's or a
    holder's standing on every request) and, for a POST, the CSRF token; turn its errors into
    pages; keep the session and send its cookie."""
    options = options or RouteOptions(who=who)
    who = options.who
    ctx = request.app.state.web_context
    language(request)
    try:
        session = await run_in_threadpool(ctx.sessions.load, request.cookies.get(COOKIE))
    except errors.StoreUnavailable as exc:
        request.state.session = WebSession()
        return error_page(request, exc)
    request.state.session = session
    try:
        standing = await _operator_standing(request, ctx, session) if session.kind == OPERATOR else "active"
        if standing != "active":
            if standing == "disabled":
                await run_in_threadpool(ctx.sessions.end_sessions, OPERATOR, session.subject)
            elif standing == "revoked":
                await run_in_threadpool(ctx.sessions.delete, session)
            session = request.state.session = ctx.sessions.new()  # this request: nobody signed in
        if session.kind == HOLDER and not await _holder_stands(ctx, session):
            await run_in_threadpool(ctx.sessions.delete, session)
            session = request.state.session = ctx.sessions.new()
        if who is not None and session.kind != who:
            target = request.url.path if request.method == "GET" else "/"
            response = redirect(f"{SIGN_IN[who]}?next={quote(target, safe='/')}")
        else:
            if request.method == "POST":
                await _check_post(request, ctx, session, options)
            response = await handler(request, ctx)
    except Exception as exc:  # every error becomes a page, here
        response = error_page(request, exc)
    try:
        if await run_in_threadpool(partial(ctx.sessions.save, session, touch=options.touch)):
            response.set_cookie(COOKIE, session.session_id, httponly=True, secure=True, samesite="lax", path="/")
    except errors.StoreUnavailable as exc:
        return error_page(request, exc)
    except ValueError as exc:  # a page put too much in the session: its fault, shown as one
        return error_page(request, exc)
    return response


def page_route(path: str, handler: Handler, *, who: str | None = None, methods=("GET",),
               name: str | None = None, files: bool = False, max_bytes: int | None = None,
               touch: bool = True) -> Route:
    """A Route serving ``handler`` as a page (serve_page). ``who``: None (anyone), "holder" (a
    holder session, else a 303 to /sign-in?next=PATH) or "operator" (else /operator/sign-in).
    ``files``: the page takes multipart forms (uploads); a multipart POST to any other page is
    refused (415) before its body is read. ``max_bytes``: the most of a POST's body read to
    check its CSRF token (default: 64 KiB, or forms.UPLOAD_CEILING with ``files``); the handler's
    read_form holds it to its own limit. ``touch=False``: a request does not count as the
    session's use (a page polled by a script must not keep a session alive)."""
    if who not in (None, HOLDER, OPERATOR):
        raise ValueError(f"page_route: who is None, 'holder' or 'operator', not {who!r}")
    options = RouteOptions(who=who, files=files, touch=touch,
                           max_bytes=max_bytes or (forms.UPLOAD_CEILING if files else forms.FORM_BYTES))

    async def endpoint(request: Request) -> Response:
        return await serve_page(request, handler, options=options)

    return Route(path, endpoint, methods=list(methods), name=name or getattr(handler, "__name__", None))


__all__ = ["page_route", "render", "brand_names", "provider_of", "redirect", "gettext", "ngettext", "flash",
           "read_form", "text_field", "secret_field", "FieldReader", "field_errors", "field_problem_text", "BadForm", "FormTooLarge", "NotAForm", "CsrfRefused",
           "PageNotFound", "Templates", "language", "local_path", "error_page", "serve_page", "RouteOptions",
           "DEFAULT_LANGUAGE", "LANGUAGES"]
