"""The RA operators' pages (the sign-in is operator_sign_in.py, enrolment operator_enrolment.py):
the dashboard (renewals to confirm, renewals under way, the in-person queue, the e-mails not
sent, an e-mail given up marked dealt with, the enrolments not finished), search of holders
and certificates, a holder's detail, and the forms of unlock and revocation.

Every page does what a `signserver ra` command does, through the same RaOperations and
RenewalWorkflow, with the signed-in operator's name (the session's subject) as the operator in the
audit trail. A refusal is shown on the form it answers, in the operator's language, with the
domain's own sentence; nothing an operator types becomes a 500. Secrets (the holder's passwords,
recovery codes, revocation phrases, OTP seeds) travel in POST bodies only and are shown once, on
pages that are never cached (the framework marks every page no-store)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from signserver.ra.errors import CoreUnavailable, OperationRefused, Refusal, RenewalNotFound, StoreUnavailable
from signserver.ra.renewal import Holder, Renewal, State
from signserver.ra.web.context import WebContext
from signserver.ra.web.account_pages import PASSWORD_RULES, password_rule_text
from signserver.ra.web.forms import BadForm, FieldReader, clean_text
from signserver.ra.web.listing_pages import PAGE_PARAMETER, PAGE_SIZE, page_link, page_token
from signserver.ra.web.operator_forms import (IDENTITY_FIELDS, MAX_CSR_BYTES, help_text, holder_from_form,
                                              new_password_errors, operator_of, read_upload, refusal_status,
                                              refusal_text)
from signserver.ra.web.operator_sign_in import HOME
from signserver.ra.web.rendering import (PageNotFound, field_errors, field_problem_text, flash, gettext, page_route,
                                        read_form, redirect, render)
from signserver.ra.web.sessions import OPERATOR

# RFC 5280's reason names, as `signserver ra revoke --reason` takes them.
REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
           "privilegeWithdrawn")
STATUSES = ("valid", "expired", "revoked")

# The renewals that have a holder working on them (a notice may be sent again, limits reopened).
UNDER_WAY = (State.CONFIRMED, State.AWAITING_IDENTITY, State.WAITING_FOR_REGISTRY, State.AWAITING_APPLICATION,
             State.AWAITING_ACTIVATION, State.ACTIVATING, State.AWAITING_IN_PERSON)
# Certificates are listed for confirmation this long before the notice is due: the organisation
# confirms first, and the holder is e-mailed notice_days before expiry.
CONFIRMATION_LEAD_DAYS = 30
DUE_SECTION = "to-confirm"  # the dashboard's section of the certificates due (its links' fragment)

MAX_IN_PERSON_FORM_BYTES = MAX_CSR_BYTES + 8 * 1024
MAX_EXPIRING_DAYS = 3660


# The dashboard

@dataclass
class Dashboard:
    to_confirm: list[Renewal] = field(default_factory=list)
    due: list = field(default_factory=list)  # CertificateRecord: valid, expiring soon, no renewal open
    # The certificates due are shown a page of the core's at a time: the token of the next page
    # ("" on the last), and whether the page's link was not one of the core's (nothing listed).
    due_next: str = ""
    due_link_refused: bool = False
    under_way: list[Renewal] = field(default_factory=list)
    in_person: list[Renewal] = field(default_factory=list)
    at_limits: set[str] = field(default_factory=set)  # renewal ids
    unavailable: str = ""  # the core did not answer: the certificates due are not shown
    outbox: dict = field(default_factory=dict)  # the e-mails not sent (RaOperations.outbox)
    # Enrolments the RA did not finish recording (RaOperations.pending_enrolments): the core may
    # have made the account, and the holder's OTP key and recovery code may never have been shown.
    pending_enrolments: list[dict] = field(default_factory=list)


def _dashboard(ctx: WebContext, due_page: str) -> Dashboard:
    """The dashboard, with the page of the certificates due that ``due_page`` (the link's page
    token, "" for the first) names. Nothing here reads a finished renewal: the RA keeps them for
    good, and the dashboard would slow down with its history."""
    workflow, settings = ctx.workflow, ctx.settings
    board = Dashboard(in_person=workflow.renewals((State.AWAITING_IN_PERSON,)), outbox=ctx.operations.outbox(),
                      pending_enrolments=ctx.operations.pending_enrolments())
    if not due_page:  # the renewals to confirm head the first page of the certificates due only
        board.to_confirm = workflow.renewals((State.AWAITING_CONFIRMATION,))
    board.under_way = [r for r in workflow.renewals(UNDER_WAY) if r.state is not State.AWAITING_IN_PERSON]
    try:
        expiring = ctx.operations.certificate_page("", settings.notice_days + CONFIRMATION_LEAD_DAYS, "valid",
                                                   page_token=page_token(due_page), page_size=PAGE_SIZE)
    except OperationRefused as exc:
        if exc.reason == "page_token_not_valid":
            board.due_link_refused = True
        else:
            board.unavailable = str(exc)
    except CoreUnavailable as exc:
        board.unavailable = str(exc)
    else:
        held = [c for c in expiring.certificates if c.account]
        renewing = workflow.serials_under_renewal(c.serial for c in held)
        board.due = sorted((c for c in held if c.serial not in renewing),
                           key=lambda c: c.not_after or datetime.datetime.max.replace(tzinfo=datetime.timezone.utc))
        board.due_next = expiring.next_page_token
    listed = board.under_way + board.in_person
    blocked = workflow.renewals_with_blocked_addresses(r.id for r in listed)
    board.at_limits = {r.id for r in listed if r.id in blocked or r.registry_lookups >= settings.registry_lookups
                       or r.face_comparisons >= settings.face_comparisons}
    return board


async def dashboard(request: Request, ctx: WebContext) -> Response:
    """GET (page: the core's token of a page of the certificates due after the first)."""
    due_page = request.query_params.get(PAGE_PARAMETER, "")
    board = await run_in_threadpool(_dashboard, ctx, due_page)
    # The page's links name the section they page: the rest of the dashboard is the same on each.
    next_due = page_link(HOME, {}, board.due_next, DUE_SECTION) if board.due_next else ""
    first_due = page_link(HOME, {}, "", DUE_SECTION) if due_page else ""
    return render(request, "operator/dashboard.html", status=400 if board.due_link_refused else 200, board=board,
                  next_due=next_due, first_due=first_due, help=help_text(request))


async def confirm(request: Request, ctx: WebContext) -> Response:
    """POST serial: the organisation confirms the renewal of that certificate."""
    form = await read_form(request)
    fields = FieldReader(form)
    serial = fields.text("serial", max_length=64)
    if fields.problems:
        flash(request, gettext(request, "Serial number: %(problem)s", problem=field_errors(request, fields)["serial"]),
              "error")
        return redirect(HOME)
    if not serial:
        flash(request, gettext(request, "Give the serial number of the certificate to renew."), "error")
        return redirect(HOME)
    try:
        renewal = await run_in_threadpool(ctx.workflow.confirm_renewal, serial, operator_of(request))
    except (Refusal, RenewalNotFound) as exc:
        flash(request, refusal_text(request, exc), "error")
        return redirect(HOME)
    flash(request, gettext(request, "The renewal of certificate %(serial)s is confirmed.", serial=renewal.serial),
          "success")
    return redirect(HOME)


async def resend_notice(request: Request, ctx: WebContext) -> Response:
    """POST: e-mail the renewal's notice again with a new link (the one before stops working)."""
    return await _act_on_renewal(request, ctx.workflow.resend_notice, lambda renewal: gettext(
        request, "The notice of the renewal of %(serial)s was sent again with a new link.", serial=renewal.serial))


async def reopen_limits(request: Request, ctx: WebContext) -> Response:
    """POST: let the holder go on past the renewal's limits (codes, registry lookups, photos)."""
    return await _act_on_renewal(request, ctx.workflow.reopen_limits, lambda renewal: gettext(
        request, "The limits of the renewal of %(serial)s start again.", serial=renewal.serial))


async def _act_on_renewal(request: Request, act, done) -> Response:
    """A dashboard button on the path's renewal: ``act(renewal_id, operator)`` (a workflow method),
    then back to the dashboard with ``done(renewal)`` or the refusal as its message."""
    await read_form(request)
    try:
        renewal = await run_in_threadpool(act, request.path_params["renewal_id"], operator_of(request))
    except (Refusal, RenewalNotFound) as exc:
        flash(request, refusal_text(request, exc), "error")
        return redirect(HOME)
    flash(request, done(renewal), "success")
    return redirect(HOME)


async def dismiss_email(request: Request, ctx: WebContext) -> Response:
    """POST: mark the e-mail given up of the path's number dealt with (the operator reached the
    holder another way): it no longer counts on the dashboard; back to the dashboard."""
    await read_form(request)
    try:
        done = await run_in_threadpool(ctx.operations.dismiss_email, request.path_params["message_id"],
                                       operator_of(request))
    except Refusal as exc:
        flash(request, refusal_text(request, exc), "error")
        return redirect(HOME)
    flash(request, gettext(request, "The e-mail to %(recipient)s is marked as dealt with: it no longer counts here.",
                           recipient=done["recipient"]), "success")
    return redirect(HOME)


async def in_person(request: Request, ctx: WebContext) -> Response:
    """GET: the renewal awaiting in-person processing and the CSR upload; POST: the core renews the
    certificate with the key of the CSR made on the holder's card.

    Raises: RenewalNotFound (a 404 page)."""
    renewal_id = request.path_params["renewal_id"]
    renewal = await run_in_threadpool(ctx.workflow.get, renewal_id)
    values = {"renewal": renewal, "error": "", "help": help_text(request)}
    if request.method == "GET":
        return render(request, "operator/in_person.html", **values)
    form = await read_form(request, max_bytes=MAX_IN_PERSON_FORM_BYTES, files=True)
    try:
        csr = await read_upload(form, "csr")
    except BadForm as exc:
        values["error"] = field_problem_text(request, exc)
        return render(request, "operator/in_person.html", status=413, **values)
    if not csr:
        values["error"] = gettext(request, "Choose the certificate request (CSR) file made on the holder's card.")
        return render(request, "operator/in_person.html", status=400, **values)
    try:
        done = await run_in_threadpool(ctx.workflow.complete_in_person, renewal_id, operator_of(request), csr)
    except (Refusal, RenewalNotFound, CoreUnavailable, StoreUnavailable) as exc:
        values["renewal"] = await run_in_threadpool(ctx.workflow.get, renewal_id)  # as it is now
        values["error"] = refusal_text(request, exc, {
            "INVALID_ARGUMENT": gettext(request, "The certificate service refused the certificate request (CSR): it "
                                                 "must be a PKCS#10 request (PEM or DER) made on the holder's card, "
                                                 "naming the holder, with a key it accepts."),
            "CERTIFICATE_REFUSED": gettext(request, "The certificate service refused the renewal: it needs a CSR "
                                                    "with a new key pair, and subject data that did not change "
                                                    "while the old certificate is valid.")})
        return render(request, "operator/in_person.html", status=refusal_status(exc), **values)
    return render(request, "operator/in_person_done.html", renewal=done)


# Search and a holder's detail

async def search(request: Request, ctx: WebContext) -> Response:
    """GET q: the registered holders by part of the account, name or e-mail address; or GET
    account / status / expiring (and page, the core's token of a page after the first): one page
    of the core's certificates, with the links to the next and the first."""
    query = request.query_params
    values = {"q": _query_text(query.get("q", "")), "account": _query_text(query.get("account", "")),
              "chosen_status": query.get("status", "") if query.get("status", "") in STATUSES else "",
              "expiring": _query_text(query.get("expiring", ""), 16), "holders": None, "certificates": None,
              "next_page": "", "first_page": "", "error": "", "statuses": STATUSES}
    operator = operator_of(request)
    try:
        if "q" in query:
            values["holders"] = await run_in_threadpool(ctx.operations.search, values["q"], operator)
        elif "account" in query or "status" in query or "expiring" in query:
            days = _days(values["expiring"])
            if days is None:
                values["error"] = gettext(request, "Expiring within is a number of days (0 to %(most)s).",
                                          most=MAX_EXPIRING_DAYS)
            else:
                token = page_token(query.get(PAGE_PARAMETER, ""))
                page = await run_in_threadpool(lambda: ctx.operations.certificate_page(
                    values["account"], days, values["chosen_status"], page_token=token, page_size=PAGE_SIZE))
                # The links carry the filters as read here: the core's token is bound to them.
                filters = {"account": values["account"], "status": values["chosen_status"],
                           "expiring": values["expiring"]}
                values["certificates"] = page.certificates
                if page.next_page_token:
                    values["next_page"] = page_link("/operator/search", filters, page.next_page_token)
                if token:
                    values["first_page"] = page_link("/operator/search", filters)
    except (Refusal, CoreUnavailable, StoreUnavailable) as exc:
        values["error"] = refusal_text(request, exc)
    return render(request, "operator/search.html", status=400 if values["error"] else 200, **values)


async def holder_detail(request: Request, ctx: WebContext) -> Response:
    """A registered holder's data, certificates and renewals (the search is audited: it shows
    personal data), and the form of the holder's registered identity data."""
    return await _holder_page(request, ctx, _account_of(request))


async def register_holder(request: Request, ctx: WebContext) -> Response:
    """POST: record (or correct) the holder's registered identity data, as `signserver ra holder`
    does: what the identity registry's data are compared with in a renewal."""
    account = _account_of(request)
    form = await read_form(request)
    fields = FieldReader(form)
    given = {name: fields.text(name, max_length=512 if name == "emails" else 256) for name in IDENTITY_FIELDS}
    holder, errors = holder_from_form(request, {**given, "account": account})
    if fields.problems:  # what was typed, shown again with the error on its field
        holder, errors, given = None, {**errors, **field_errors(request, fields)}, {**given, **fields.typed}
    if errors:
        return await _holder_page(request, ctx, account, given=given, errors=errors)
    await run_in_threadpool(ctx.workflow.register_holder, holder, operator_of(request))
    flash(request, gettext(request, "The identity data of %(account)s are recorded.", account=account), "success")
    return redirect(f"/operator/holders/{quote(account, safe='')}")


def _account_of(request: Request) -> str:
    """Raises: PageNotFound: the path's account is not printable text."""
    account = request.path_params["account"]
    if not account or _query_text(account) != account:
        raise PageNotFound("no such holder")
    return account


async def _holder_page(request: Request, ctx: WebContext, account: str, *, given: dict | None = None,
                       errors: dict | None = None) -> Response:
    operator = operator_of(request)

    def gather() -> tuple[Holder | None, list, list[Renewal], Exception | None]:
        holder = ctx.operations.holder(account, operator)
        try:
            certificates = ctx.operations.certificates(account)
            problem = None
        except (OperationRefused, CoreUnavailable) as exc:
            certificates, problem = [], exc
        return holder, certificates, ctx.workflow.renewals((), account), problem

    holder, certificates, renewals, refused = await run_in_threadpool(gather)
    problem = refusal_text(request, refused) if refused is not None else ""
    if given is None:
        given = ({"name": holder.name, "id_type": holder.id_type, "id_number": holder.id_number,
                  "birth_date": holder.birth_date.isoformat(), "emails": " ".join(holder.emails)} if holder else {})
    status = 400 if errors else 404 if holder is None and not certificates and not renewals else 200
    return render(request, "operator/holder.html", status=status, account=account, holder=holder,
                  certificates=certificates, renewals=renewals, problem=problem, help=help_text(request),
                  form=given, errors=errors or {})


# Unlock and revocation

async def unlock(request: Request, ctx: WebContext) -> Response:
    """GET: the unlock form; POST: the holder's recovery code clears the lock and sets the new
    password; the holder's new recovery code is shown once."""
    values = {"account": "", "error": "", "errors": {}}
    if request.method == "GET":
        return render(request, "operator/unlock.html", **values)
    form = await read_form(request)
    fields = FieldReader(form)
    account = fields.text("account", max_length=128)
    recovery_code, new_password, confirmation = (fields.secret(name) for name in
                                                 ("recovery_code", "new_password", "confirmation"))
    values["account"] = fields.typed.get("account", account)
    errors = {}
    if not account:
        errors["account"] = gettext(request, "Give the holder's account.")
    if not recovery_code:
        errors["recovery_code"] = gettext(request, "This field is required.")
    errors.update(new_password_errors(request, new_password, confirmation))
    errors.update(field_errors(request, fields))  # a field too long or not text: said on the field
    if errors:
        values["errors"] = errors
        return render(request, "operator/unlock.html", status=400, **values)
    try:
        unlocked = await run_in_threadpool(ctx.operations.unlock, account, recovery_code, new_password,
                                           confirmation, operator_of(request))
    except (Refusal, CoreUnavailable) as exc:
        if getattr(exc, "reason", "") in PASSWORD_RULES:  # the core's rules (a common password ...), on the field
            field, message = password_rule_text(request, exc.reason)
            values["errors"] = {field: message}
            return render(request, "operator/unlock.html", status=400, **values)
        values["error"] = refusal_text(request, exc, {
            "AUTHENTICATION_FAILED": gettext(request, "The recovery code was refused (not right, already used, or "
                                                      "the account has none); nothing was changed."),
            "NOT_FOUND": gettext(request, "The certificate service has no such account.")})
        return render(request, "operator/unlock.html", status=refusal_status(exc), **values)
    return render(request, "operator/unlocked.html", account=account, recovery_code=unlocked.recovery_code,
                  not_recorded=unlocked.not_recorded, reference=unlocked.reference)


async def revoke(request: Request, ctx: WebContext) -> Response:
    """GET (serial in the query, from a certificate's row): the revocation form; POST: the
    certificate revoked with the reason chosen and confirmed, on the operator's decision, or at
    the holder's request when the holder's account and revocation phrase are given (at the counter
    or on the telephone; a wrong phrase is refused and audited)."""
    values = {"serial": _query_text(request.query_params.get("serial", ""), 64), "reason": "", "account": "",
              "confirmed": False, "errors": {}, "error": "", "reasons": REASONS}
    if request.method == "GET":
        return render(request, "operator/revoke.html", **values)
    form = await read_form(request)
    fields = FieldReader(form)
    serial = fields.text("serial", max_length=64)
    reason = str(form.get("reason", ""))
    account = fields.text("account", max_length=128)
    phrase = fields.secret("revocation_phrase")
    values.update(serial=serial, reason=reason, account=account, confirmed=form.get("confirmed") == "yes")
    values.update(fields.typed)
    errors = {}
    if not serial:
        errors["serial"] = gettext(request, "This field is required.")
    if reason not in REASONS:
        errors["reason"] = gettext(request, "Choose the reason of the revocation.")
    if phrase and not account:
        errors["account"] = gettext(request, "Give the holder's account with the holder's revocation phrase.")
    if form.get("confirmed") != "yes":
        errors["confirmed"] = gettext(request, "Tick the box to confirm: a revocation cannot be undone.")
    errors.update(field_errors(request, fields))  # a field too long or not text: said on the field
    if errors:
        values["errors"] = errors
        return render(request, "operator/revoke.html", status=400, **values)
    operator = operator_of(request)
    try:
        if phrase:
            revoked = await run_in_threadpool(ctx.operations.revoke_by_holder, serial, account, phrase, operator,
                                              reason)
        else:
            revoked = await run_in_threadpool(ctx.operations.revoke, serial, reason, operator)
    except (Refusal, CoreUnavailable) as exc:
        values["error"] = refusal_text(request, exc, {
            "PERMISSION_DENIED": gettext(request, "The revocation phrase is not right for this certificate and "
                                                  "account."),
            "NOT_FOUND": gettext(request, "The certificate service has no such certificate."),
            "CERTIFICATE_REFUSED": gettext(request, "This certificate is revoked already.")})  # a second submission
        return render(request, "operator/revoke.html", status=refusal_status(exc), **values)
    flash(request, gettext(request, "Certificate %(serial)s is revoked.", serial=revoked.serial), "success")
    return redirect(f"/operator/holders/{quote(revoked.account, safe='')}" if revoked.account else HOME)


# Helpers

def _query_text(value: str, max_length: int = 128) -> str:
    """A query parameter as clean text (forms.clean_text), "" when it is not (too long, control
    characters): a search for nothing rather than an error page."""
    try:
        return clean_text(value, max_length=max_length)
    except BadForm:
        return ""


def _days(value: str) -> int | None:
    """A number of days, 0 to MAX_EXPIRING_DAYS, in ASCII digits ("" is 0); else None."""
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()):  # "²" and "٣" are digits to str.isdigit, not to int()
        return None
    days = int(value)
    return days if days <= MAX_EXPIRING_DAYS else None


def routes() -> list[BaseRoute]:
    both = ("GET", "POST")
    return [
        page_route(HOME, dashboard, who=OPERATOR, name="operator_dashboard"),
        page_route("/operator/renewals/confirm", confirm, who=OPERATOR, methods=("POST",), name="operator_confirm"),
        page_route("/operator/renewals/{renewal_id:str}/resend-notice", resend_notice, who=OPERATOR,
                   methods=("POST",), name="operator_resend_notice"),
        page_route("/operator/renewals/{renewal_id:str}/reopen-limits", reopen_limits, who=OPERATOR,
                   methods=("POST",), name="operator_reopen_limits"),
        page_route("/operator/outbox/{message_id:int}/dismiss", dismiss_email, who=OPERATOR, methods=("POST",),
                   name="operator_dismiss_email"),
        page_route("/operator/renewals/{renewal_id:str}/in-person", in_person, who=OPERATOR, methods=both,
                   name="operator_in_person", files=True, max_bytes=MAX_IN_PERSON_FORM_BYTES),
        page_route("/operator/search", search, who=OPERATOR, name="operator_search"),
        page_route("/operator/holders/{account:str}", holder_detail, who=OPERATOR, name="operator_holder"),
        page_route("/operator/holders/{account:str}/identity", register_holder, who=OPERATOR, methods=("POST",),
                   name="operator_register_holder"),
        page_route("/operator/unlock", unlock, who=OPERATOR, methods=both, name="operator_unlock"),
        page_route("/operator/revoke", revoke, who=OPERATOR, methods=both, name="operator_revoke"),
    ]
