"""The operators' sign-in: an operator account with its password and one-time password
(OperatorAccounts), or the RA client certificate the browser presented on the connection
(client_certificate.py), which the core must still hold in force.

A refusal says the same for every wrong factor, and a locked name (known or not: the lock is kept
by name) says until when. Only an operator page of this RA is the next page after signing in."""

from __future__ import annotations

import datetime
from urllib.parse import unquote

from cryptography import x509
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from signserver.ra.errors import OperatorAuthenticationFailed, OperatorLocked
from signserver.ra.web import client_certificate
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import format_moment
from signserver.ra.web.forms import FieldReader
from signserver.ra.web.rendering import field_errors, gettext, local_path, page_route, read_form, redirect, render
from signserver.ra.web.rendering import language as rendering_language
from signserver.ra.web.sessions import OPERATOR, sign_in

HOME = "/operator"
SIGN_IN = "/operator/sign-in"
CERTIFICATE_SIGN_IN = "/operator/sign-in/certificate"
SIGN_IN_FORM = "operator-sign-in"
MAX_NAME_LENGTH = 128  # of an operator's name (operator_accounts.NAME)


async def sign_in_page(request: Request, ctx: WebContext) -> Response:
    """GET: the form (and, with a verified RA client certificate, the certificate's button);
    POST: name, password and OTP checked by OperatorAccounts.

    Raises: RateLimited (a 429 page) past the attempts per address or per operator name."""
    next_path = next_page(request.query_params.get("next", ""))
    certificate_name = client_certificate.operator_from_certificate(
        client_certificate.client_certificate_der(request), ctx.settings) or ""
    values = {"next_path": next_path, "certificate_name": certificate_name, "name": "", "error": "", "errors": {}}
    if request.method == "GET":
        return render(request, "operator/sign_in.html", **values)
    form = await read_form(request)
    fields = FieldReader(form)
    name = fields.text("name", max_length=MAX_NAME_LENGTH)
    password = fields.secret("password")
    otp = fields.text("otp", max_length=16)
    values.update(name=fields.typed.get("name", name), next_path=next_page(str(form.get("next", ""))))
    ctx.limits.check(request, SIGN_IN_FORM, account=name)
    if fields.problems:  # a field too long or not text: said on it, before any factor is checked
        values["errors"] = field_errors(request, fields)
        return render(request, "operator/sign_in.html", status=400, **values)
    if not (name and password and otp):
        values["error"] = gettext(request, "Give the operator name, the password and the one-time password.")
        return render(request, "operator/sign_in.html", status=400, **values)
    try:
        operator = await run_in_threadpool(ctx.operators.authenticate, name, password, otp)
    except (OperatorAuthenticationFailed, OperatorLocked) as exc:
        values["error"] = _refusal(request, exc)
        return render(request, "operator/sign_in.html", status=423 if isinstance(exc, OperatorLocked) else 401,
                      **values)
    sign_in(request, OPERATOR, operator)
    return redirect(values["next_path"])


async def certificate_sign_in(request: Request, ctx: WebContext) -> Response:
    """POST: sign in as the operator named by the verified RA client certificate the browser
    presented on this connection, once the core confirms the certificate is in force (TLS knows
    nothing of revocation); recorded in the audit trail with the certificate's serial.

    Raises: RateLimited; CoreUnavailable (a 503 page: the sign-in cannot be decided now)."""
    form = await read_form(request)
    ctx.limits.check(request, SIGN_IN_FORM)
    next_path = next_page(str(form.get("next", "")))
    der = client_certificate.client_certificate_der(request)
    name = client_certificate.operator_from_certificate(der, ctx.settings)
    if not name or not await run_in_threadpool(client_certificate.certificate_in_force, der, ctx.certificates):
        values = {"next_path": next_path, "certificate_name": "", "name": "", "errors": {},
                  "error": gettext(request, "No registration authority certificate of an operator was presented.")}
        return render(request, "operator/sign_in.html", status=403, **values)
    serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
    await run_in_threadpool(ctx.operators.certificate_signed_in, name, serial)
    sign_in(request, OPERATOR, name, via="certificate")
    return redirect(next_path)


def _refusal(request: Request, exc: OperatorAuthenticationFailed | OperatorLocked) -> str:
    """One sentence for any wrong factor (a disabled account included: it is not told apart),
    another for a locked name, with the end of the lock."""
    if isinstance(exc, OperatorLocked):
        until = exc.locked_until
        if isinstance(until, datetime.datetime):
            return gettext(request, "Too many failed sign-ins: this operator account is locked until %(time)s.",
                           time=format_moment(until, rendering_language(request)))
        return gettext(request, "Too many failed sign-ins: this operator account is locked for 30 minutes.")
    return gettext(request, "The operator name, the password or the one-time password is not right.")


def next_page(path: str) -> str:
    """Where to go after the sign-in: an operator page of this RA (a local path under /operator,
    not the sign-in itself), else the dashboard."""
    path = local_path(path, HOME)
    page = path.split("?", 1)[0]
    # A browser resolves "." and ".." segments (also written %2e): /operator/../holder is /holder.
    dots = any(segment in (".", "..") for segment in unquote(page).split("/"))
    if (page == HOME or page.startswith(HOME + "/")) and page not in (SIGN_IN, CERTIFICATE_SIGN_IN) and not dots:
        return path
    return HOME


def routes() -> list[BaseRoute]:
    return [
        page_route(SIGN_IN, sign_in_page, methods=("GET", "POST"), name="operator_sign_in"),
        page_route(CERTIFICATE_SIGN_IN, certificate_sign_in, methods=("POST",), name="operator_certificate_sign_in"),
    ]
