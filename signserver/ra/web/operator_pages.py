"""The RA operators' pages (the sign-in is operator_sign_in.py): the dashboard (renewals to
confirm, renewals under way, the in-person queue), search of holders and certificates, a holder's
detail, and the forms of enrolment, unlock and revocation.

Every page does what a `signserver ra` command does, through the same RaOperations and
RenewalWorkflow, with the signed-in operator's name (the session's subject) as the operator in the
audit trail. A refusal is shown on the form it answers, in the operator's language, with the
domain's own sentence; nothing an operator types becomes a 500. Secrets (the holder's passwords,
recovery codes, revocation phrases, OTP seeds) travel in POST bodies only and are shown once, on
pages that are never cached (the framework marks every page no-store)."""

from __future__ import annotations

import base64
import datetime
import io
from urllib.parse import quote
from dataclasses import dataclass, field

import qrcode
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from signserver.ra.errors import CoreUnavailable, OperationRefused, Refusal, RenewalNotFound, StoreUnavailable
from signserver.ra.help_codes import guidance
from signserver.ra.operations import Enrolment, EnrolmentSecrets, HolderFound, check_enrolment
from signserver.ra.renewal import Holder, Renewal, State
from signserver.ra.web.context import WebContext
from signserver.ra.web.forms import BadForm, clean_text
from signserver.ra.web.operator_sign_in import HOME
from signserver.ra.web.rendering import (PageNotFound, flash, gettext, page_route, read_form, redirect, render,
                                        secret_field, text_field)
from signserver.ra.web.rendering import language as rendering_language
from signserver.ra.web.sessions import OPERATOR, session_of

# The holder profiles of the core's CA (signserver/ca/profiles.py; the RA may not import it).
PROFILES = ("cloud-signature-government", "cloud-signature-corporate", "qualified-government", "qualified-corporate",
            "standard-government", "standard-corporate", "encryption-government", "encryption-corporate")
KINDS = ("personal", "government", "corporate")
# RFC 5280's reason names, as `signserver ra revoke --reason` takes them.
REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
           "certificateHold", "privilegeWithdrawn")
STATUSES = ("valid", "expired", "revoked")
# A holder's registered identity data (what the registry's data are compared with in a renewal).
IDENTITY_FIELDS = ("id_type", "id_number", "name", "birth_date", "emails")

# The renewals that have a holder working on them (a notice may be sent again, limits reopened).
UNDER_WAY = (State.CONFIRMED, State.AWAITING_IDENTITY, State.WAITING_FOR_REGISTRY, State.AWAITING_APPLICATION,
             State.AWAITING_ACTIVATION, State.ACTIVATING, State.AWAITING_IN_PERSON)
# Certificates are listed for confirmation this long before the notice is due: the organisation
# confirms first, and the holder is e-mailed notice_days before expiry.
CONFIRMATION_LEAD_DAYS = 30

MAX_EMAILS = 8
MAX_CSR_BYTES = 64 * 1024
MAX_ENROL_FORM_BYTES = MAX_CSR_BYTES + 32 * 1024
MAX_IN_PERSON_FORM_BYTES = MAX_CSR_BYTES + 8 * 1024
MAX_EXPIRING_DAYS = 3660


# The dashboard

@dataclass
class Dashboard:
    to_confirm: list[Renewal] = field(default_factory=list)
    due: list = field(default_factory=list)  # CertificateRecord: valid, expiring soon, no renewal open
    under_way: list[Renewal] = field(default_factory=list)
    in_person: list[Renewal] = field(default_factory=list)
    at_limits: set[str] = field(default_factory=set)  # renewal ids
    unavailable: str = ""  # the core did not answer: the certificates due are not shown


def _dashboard(ctx: WebContext) -> Dashboard:
    workflow, settings = ctx.workflow, ctx.settings
    board = Dashboard(to_confirm=workflow.renewals((State.AWAITING_CONFIRMATION,)),
                      in_person=workflow.renewals((State.AWAITING_IN_PERSON,)))
    board.under_way = [r for r in workflow.renewals(UNDER_WAY) if r.state is not State.AWAITING_IN_PERSON]
    open_serials = {r.serial for r in workflow.renewals() if not r.final}
    try:
        expiring = ctx.operations.certificates("", settings.notice_days + CONFIRMATION_LEAD_DAYS, "valid")
    except (CoreUnavailable, OperationRefused) as exc:
        board.unavailable = str(exc)
    else:
        board.due = sorted((c for c in expiring if c.account and c.serial not in open_serials),
                           key=lambda c: c.not_after or datetime.datetime.max.replace(tzinfo=datetime.timezone.utc))
    blocked = workflow.renewals_with_blocked_addresses()
    board.at_limits = {r.id for r in board.under_way + board.in_person
                       if r.id in blocked or r.registry_lookups >= settings.registry_lookups
                       or r.face_comparisons >= settings.face_comparisons}
    return board


async def dashboard(request: Request, ctx: WebContext) -> Response:
    board = await run_in_threadpool(_dashboard, ctx)
    return render(request, "operator/dashboard.html", board=board, help=_help_text(request))


async def confirm(request: Request, ctx: WebContext) -> Response:
    """POST serial: the organisation confirms the renewal of that certificate."""
    form = await read_form(request)
    serial = text_field(form, "serial", required=False, max_length=64)
    if not serial:
        flash(request, gettext(request, "Give the serial number of the certificate to renew."), "error")
        return redirect(HOME)
    try:
        renewal = await run_in_threadpool(ctx.workflow.confirm_renewal, serial, _operator(request))
    except (Refusal, RenewalNotFound) as exc:
        flash(request, _refused(request, exc), "error")
        return redirect(HOME)
    flash(request, gettext(request, "The renewal of certificate %(serial)s is confirmed.", serial=renewal.serial),
          "success")
    return redirect(HOME)


async def resend_notice(request: Request, ctx: WebContext) -> Response:
    """POST: e-mail the renewal's notice again with a new link (the one before stops working)."""
    await read_form(request)
    renewal_id = request.path_params["renewal_id"]
    try:
        renewal = await run_in_threadpool(ctx.workflow.resend_notice, renewal_id, _operator(request))
    except (Refusal, RenewalNotFound) as exc:
        flash(request, _refused(request, exc), "error")
        return redirect(HOME)
    flash(request, gettext(request, "The notice of the renewal of %(serial)s was sent again with a new link.",
                           serial=renewal.serial), "success")
    return redirect(HOME)


async def reopen_limits(request: Request, ctx: WebContext) -> Response:
    """POST: let the holder go on past the renewal's limits (codes, registry lookups, photos)."""
    await read_form(request)
    renewal_id = request.path_params["renewal_id"]
    try:
        renewal = await run_in_threadpool(ctx.workflow.reopen_limits, renewal_id, _operator(request))
    except (Refusal, RenewalNotFound) as exc:
        flash(request, _refused(request, exc), "error")
        return redirect(HOME)
    flash(request, gettext(request, "The limits of the renewal of %(serial)s start again.", serial=renewal.serial),
          "success")
    return redirect(HOME)


async def in_person(request: Request, ctx: WebContext) -> Response:
    """GET: the renewal awaiting in-person processing and the CSR upload; POST: the core renews the
    certificate with the key of the CSR made on the holder's card.

    Raises: RenewalNotFound (a 404 page)."""
    renewal_id = request.path_params["renewal_id"]
    renewal = await run_in_threadpool(ctx.workflow.get, renewal_id)
    values = {"renewal": renewal, "error": "", "help": _help_text(request)}
    if request.method == "GET":
        return render(request, "operator/in_person.html", **values)
    form = await read_form(request, max_bytes=MAX_IN_PERSON_FORM_BYTES, files=True)
    csr = await _upload(form, "csr")
    if not csr:
        values["error"] = gettext(request, "Choose the certificate request (CSR) file made on the holder's card.")
        return render(request, "operator/in_person.html", status=400, **values)
    try:
        done = await run_in_threadpool(ctx.workflow.complete_in_person, renewal_id, _operator(request), csr)
    except (Refusal, RenewalNotFound) as exc:
        values["error"] = _refused(request, exc)
        return render(request, "operator/in_person.html", status=_status_of(exc), **values)
    return render(request, "operator/in_person_done.html", renewal=done)


# Search and a holder's detail

async def search(request: Request, ctx: WebContext) -> Response:
    """GET q: the registered holders by part of the account, name or e-mail address; or GET
    account / status / expiring: the core's certificates."""
    query = request.query_params
    values = {"q": _query_text(query.get("q", "")), "account": _query_text(query.get("account", "")),
              "chosen_status": query.get("status", "") if query.get("status", "") in STATUSES else "",
              "expiring": _query_text(query.get("expiring", ""), 16), "holders": None, "certificates": None,
              "error": "", "statuses": STATUSES}
    operator = _operator(request)
    try:
        if "q" in query:
            values["holders"] = await run_in_threadpool(ctx.operations.search, values["q"], operator)
        elif "account" in query or "status" in query or "expiring" in query:
            days = _days(values["expiring"])
            if days is None:
                values["error"] = gettext(request, "Expiring within is a number of days (0 to %(most)s).",
                                          most=MAX_EXPIRING_DAYS)
            else:
                values["certificates"] = await run_in_threadpool(ctx.operations.certificates, values["account"],
                                                                 days, values["chosen_status"])
    except (Refusal, CoreUnavailable, StoreUnavailable) as exc:
        values["error"] = _refused(request, exc)
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
    given = {name: text_field(form, name, required=False, max_length=512 if name == "emails" else 256)
             for name in IDENTITY_FIELDS}
    holder, errors = _holder_of(request, {**given, "account": account})
    if errors:
        return await _holder_page(request, ctx, account, given=given, errors=errors)
    await run_in_threadpool(ctx.workflow.register_holder, holder, _operator(request))
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
    operator = _operator(request)

    def gather() -> tuple[Holder | None, list, list[Renewal], str]:
        found: list[HolderFound] = ctx.operations.search(account, operator)
        holder = next((f.holder for f in found if f.holder.account == account), None)
        try:
            certificates = ctx.operations.certificates(account)
            problem = ""
        except (OperationRefused, CoreUnavailable) as exc:
            certificates, problem = [], str(exc)
        return holder, certificates, ctx.workflow.renewals((), account), problem

    holder, certificates, renewals, problem = await run_in_threadpool(gather)
    if given is None:
        given = ({"name": holder.name, "id_type": holder.id_type, "id_number": holder.id_number,
                  "birth_date": holder.birth_date.isoformat(), "emails": " ".join(holder.emails)} if holder else {})
    status = 400 if errors else 404 if holder is None and not certificates and not renewals else 200
    return render(request, "operator/holder.html", status=status, account=account, holder=holder,
                  certificates=certificates, renewals=renewals, problem=problem, help=_help_text(request),
                  form=given, errors=errors or {})


# Enrolment, unlock, revocation

ENROL_TEXT_FIELDS = ("account", "id_type", "id_number", "name", "birth_date", "emails", "organisation", "department",
                     "title", "given_name", "surname", "key_algorithm", "transaction_limit", "agent_qualification")


async def enrol(request: Request, ctx: WebContext) -> Response:
    """GET: the enrolment form; POST: the holder's account in the core and the certificate; the
    holder's OTP key (as a QR code) and recovery code are shown once."""
    values = {"form": {"profile": PROFILES[0], "kind": "government", "recovery_code": True}, "errors": {},
              "error": "", "profiles": PROFILES, "kinds": KINDS}
    if request.method == "GET":
        return render(request, "operator/enrol.html", **values)
    form = await read_form(request, max_bytes=MAX_ENROL_FORM_BYTES, files=True)
    given = {name: text_field(form, name, required=False, max_length=512 if name == "emails" else 256)
             for name in ENROL_TEXT_FIELDS}
    given.update(profile=str(form.get("profile", "")), kind=str(form.get("kind", "")),
                 recovery_code=form.get("recovery_code") == "yes",
                 existing_account=form.get("existing_account") == "yes")
    values["form"] = given
    enrolment, errors = _enrolment(request, given, await _upload(form, "csr"))
    if errors:
        values["errors"] = errors
        return render(request, "operator/enrol.html", status=400, **values)
    secrets = EnrolmentSecrets(password=secret_field(form, "password", required=False),
                               confirmation=secret_field(form, "confirmation", required=False),
                               revocation_phrase=secret_field(form, "revocation_phrase", required=False))
    if secrets.revocation_phrase != secret_field(form, "revocation_phrase_confirmation", required=False):
        values["errors"] = {"revocation_phrase_confirmation": gettext(
            request, "The revocation phrase and its confirmation differ.")}
        return render(request, "operator/enrol.html", status=400, **values)
    try:
        enrolled = await run_in_threadpool(ctx.operations.enrol, enrolment, secrets, _operator(request))
    except (Refusal, CoreUnavailable, StoreUnavailable) as exc:
        values["error"] = _refused(request, exc)
        return render(request, "operator/enrol.html", status=_status_of(exc), **values)
    return render(request, "operator/enrolled.html", enrolled=enrolled,
                  otp_qr=_qr_data_url(enrolled.otp_uri) if enrolled.otp_uri else "",
                  otp_key=_otp_key(enrolled.otp_uri), help=_help_text(request))


def _enrolment(request: Request, given: dict, csr: bytes | None) -> tuple[Enrolment | None, dict[str, str]]:
    """The Enrolment of the form's values, else the errors by field name."""
    holder, errors = _holder_of(request, given)
    if given["profile"] not in PROFILES:
        errors["profile"] = gettext(request, "Choose a certificate profile.")
    if given["kind"] not in KINDS:
        errors["kind"] = gettext(request, "Choose the kind of holder.")
    limit = 0
    if given["transaction_limit"]:
        try:
            limit = int(given["transaction_limit"])
            if limit < 0 or limit > 10**12:
                raise ValueError
        except ValueError:
            errors["transaction_limit"] = gettext(request, "A transaction limit is a whole number of patacas, "
                                                           "0 for none.")
    if errors:
        return None, errors
    enrolment = Enrolment(
        holder=holder, profile=given["profile"], kind=given["kind"], organisation=given["organisation"],
        department=given["department"], title=given["title"], given_name=given["given_name"],
        surname=given["surname"], key_algorithm=given["key_algorithm"], csr=csr or None, transaction_limit=limit,
        agent_qualification=given["agent_qualification"], recovery_code=given["recovery_code"],
        existing_account=given["existing_account"])
    try:
        check_enrolment(enrolment)
    except OperationRefused as exc:
        field_name = "csr" if "CSR" in str(exc) else "profile"
        return None, {field_name: _refused(request, exc)}
    return enrolment, {}


def _holder_of(request: Request, given: dict) -> tuple[Holder | None, dict[str, str]]:
    """The Holder of the form's values (account, identity document, name, birth date, e-mail
    addresses), else None and the errors by field name."""
    errors: dict[str, str] = {}
    for name in ("account", *IDENTITY_FIELDS):
        if not given[name]:
            errors[name] = gettext(request, "This field is required.")
    birth_date = None
    if given["birth_date"]:
        try:
            birth_date = datetime.date.fromisoformat(given["birth_date"])
        except ValueError:
            errors["birth_date"] = gettext(request, "A date is written YYYY-MM-DD.")
    emails = tuple(dict.fromkeys(e.strip() for e in given["emails"].replace(",", " ").split() if e.strip()))
    if given["emails"] and (len(emails) > MAX_EMAILS or not all(_looks_like_email(e) for e in emails)):
        errors["emails"] = gettext(request, "Give up to %(most)s e-mail addresses, separated by spaces or commas.",
                                   most=MAX_EMAILS)
    if errors:
        return None, errors
    return Holder(given["account"], given["id_type"], given["id_number"], given["name"], birth_date, emails), {}


def _looks_like_email(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and len(address) <= 320)


async def unlock(request: Request, ctx: WebContext) -> Response:
    """GET: the unlock form; POST: the holder's recovery code clears the lock and sets the new
    password; the holder's new recovery code is shown once."""
    values = {"account": "", "error": ""}
    if request.method == "GET":
        return render(request, "operator/unlock.html", **values)
    form = await read_form(request)
    account = text_field(form, "account", required=False, max_length=128)
    values["account"] = account
    if not account:
        values["error"] = gettext(request, "Give the holder's account.")
        return render(request, "operator/unlock.html", status=400, **values)
    try:
        recovery_code, new_password, confirmation = (secret_field(form, name, required=False) for name in
                                                     ("recovery_code", "new_password", "confirmation"))
        code = await run_in_threadpool(ctx.operations.unlock, account, recovery_code, new_password, confirmation,
                                       _operator(request))
    except (Refusal, CoreUnavailable) as exc:
        values["error"] = _refused(request, exc)
        return render(request, "operator/unlock.html", status=_status_of(exc), **values)
    return render(request, "operator/unlocked.html", account=account, recovery_code=code)


async def revoke(request: Request, ctx: WebContext) -> Response:
    """GET (serial in the query, from a certificate's row): the revocation form; POST: the
    certificate revoked with the reason chosen and confirmed, on the operator's decision, or at
    the holder's request when the holder's account and revocation phrase are given (at the counter
    or on the telephone; a wrong phrase is refused and audited)."""
    values = {"serial": _query_text(request.query_params.get("serial", ""), 64), "reason": "", "account": "",
              "errors": {}, "error": "", "reasons": REASONS}
    if request.method == "GET":
        return render(request, "operator/revoke.html", **values)
    form = await read_form(request)
    serial = text_field(form, "serial", required=False, max_length=64)
    reason = str(form.get("reason", ""))
    account = text_field(form, "account", required=False, max_length=128)
    phrase = secret_field(form, "revocation_phrase", required=False)
    values.update(serial=serial, reason=reason, account=account)
    errors = {}
    if not serial:
        errors["serial"] = gettext(request, "This field is required.")
    if reason not in REASONS:
        errors["reason"] = gettext(request, "Choose the reason of the revocation.")
    if phrase and not account:
        errors["account"] = gettext(request, "Give the holder's account with the holder's revocation phrase.")
    if form.get("confirmed") != "yes":
        errors["confirmed"] = gettext(request, "Tick the box to confirm: a revocation cannot be undone.")
    if errors:
        values["errors"] = errors
        return render(request, "operator/revoke.html", status=400, **values)
    operator = _operator(request)
    try:
        if phrase:
            revoked = await run_in_threadpool(ctx.operations.revoke_by_holder, serial, account, phrase, operator,
                                              reason)
        else:
            revoked = await run_in_threadpool(ctx.operations.revoke, serial, reason, operator)
    except (Refusal, CoreUnavailable) as exc:
        values["error"] = _refused(request, exc)
        return render(request, "operator/revoke.html", status=_status_of(exc), **values)
    flash(request, gettext(request, "Certificate %(serial)s is revoked.", serial=revoked.serial), "success")
    return redirect(f"/operator/holders/{quote(revoked.account, safe='')}" if revoked.account else HOME)


# Helpers

def _operator(request: Request) -> str:
    """The signed-in operator's name: the one recorded in the audit trail."""
    return session_of(request).subject



async def _upload(form, name: str) -> bytes:
    """The bytes of an uploaded file field (b"" when none was chosen).

    Raises: BadForm: the file is larger than MAX_CSR_BYTES."""
    value = form.get(name)
    if not isinstance(value, UploadFile):
        return b""
    data = await value.read(MAX_CSR_BYTES + 1)
    if len(data) > MAX_CSR_BYTES:
        raise BadForm("the file is too large")
    return data


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


def _refused(request: Request, exc: Exception) -> str:
    """The sentence for a refusal: the domain's own (English) sentence after a translated lead,
    and a help code's guidance in the operator's language when it has one."""
    code = getattr(exc, "help_code", "") or ""
    if isinstance(exc, CoreUnavailable):
        text = gettext(request, "The certificate service does not answer; try again later.")
    elif isinstance(exc, StoreUnavailable):
        text = gettext(request, "The registration authority's database does not answer; try again later.")
    elif isinstance(exc, RenewalNotFound):
        text = gettext(request, "There is no such renewal.")
    else:
        text = gettext(request, "Refused: %(reason)s", reason=str(exc))
    if code:
        text = f"{text} {_help_text(request)(code)} ({code})"
    return text


def _status_of(exc: Exception) -> int:
    if isinstance(exc, (CoreUnavailable, StoreUnavailable)):
        return 503
    if isinstance(exc, RenewalNotFound):
        return 404
    return 409 if isinstance(exc, Refusal) else 400


def _help_text(request: Request):
    """A function giving a help code's guidance in the request's language (help_codes.guidance,
    without the code: the pages show it beside)."""
    language = rendering_language(request)
    provider = request.app.state.web_context.settings.provider_name
    return lambda code: guidance(code, language, provider) if code else ""


def _qr_data_url(text: str) -> str:
    """``text`` as a QR code in a PNG data: URL (the CSP allows img-src data:)."""
    image = qrcode.make(text, box_size=6, border=2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _otp_key(uri: str) -> str:
    """The base32 key of an otpauth:// URI, in groups of four, for typing into an OTP app."""
    from urllib.parse import parse_qs, urlparse

    key = (parse_qs(urlparse(uri).query).get("secret") or [""])[0] if uri else ""
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


def routes() -> list[BaseRoute]:
    both = ("GET", "POST")
    return [
        page_route(HOME, dashboard, who=OPERATOR, name="operator_dashboard"),
        page_route("/operator/renewals/confirm", confirm, who=OPERATOR, methods=("POST",), name="operator_confirm"),
        page_route("/operator/renewals/{renewal_id:str}/resend-notice", resend_notice, who=OPERATOR,
                   methods=("POST",), name="operator_resend_notice"),
        page_route("/operator/renewals/{renewal_id:str}/reopen-limits", reopen_limits, who=OPERATOR,
                   methods=("POST",), name="operator_reopen_limits"),
        page_route("/operator/renewals/{renewal_id:str}/in-person", in_person, who=OPERATOR, methods=both,
                   name="operator_in_person", files=True, max_bytes=MAX_IN_PERSON_FORM_BYTES),
        page_route("/operator/search", search, who=OPERATOR, name="operator_search"),
        page_route("/operator/holders/{account:str}", holder_detail, who=OPERATOR, name="operator_holder"),
        page_route("/operator/holders/{account:str}/identity", register_holder, who=OPERATOR, methods=("POST",),
                   name="operator_register_holder"),
        page_route("/operator/enrol", enrol, who=OPERATOR, methods=both, name="operator_enrol", files=True,
                   max_bytes=MAX_ENROL_FORM_BYTES),
        page_route("/operator/unlock", unlock, who=OPERATOR, methods=both, name="operator_unlock"),
        page_route("/operator/revoke", revoke, who=OPERATOR, methods=both, name="operator_revoke"),
    ]
