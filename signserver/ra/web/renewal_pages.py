"""The renewal's pages (documents 002 and 003): /holder/renewals/{id} shows the step the renewal
is at, chosen from its state, and each step's form posts to a path below it, driving the same
workflow methods as the JSON API (in a thread: they wait on the database, the registry and the
core). A refusal of the workflow is shown on the step's page, in the holder's language.

Steps: consent; e-mail codes (each address verified, or a code sent and typed; the code's validity
counted down by static/renewal.js, its end printed for a page without script); the registry's
check (run by the holder's "next", and again by the background pass while the registry does not
answer); the photo; the review with the applicant/subscriber agreement; the application document
(downloaded, then signed with the cloud-signature password and OTP, or uploaded signed with an
eID); the activation (the current password, or a new one when the account holds no valid
certificate, and the revocation phrase twice); its progress; the outcome.

Only a renewal the session may act on (sessions.holder_may_act) is shown; any other id is a 404.
The handlers raise, for page_route to render: RenewalNotFound (404), RateLimited (429), BadForm and
FormTooLarge (400, 413), CoreUnavailable (503)."""

from __future__ import annotations

import datetime
import logging

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from signserver.ra import errors
from signserver.ra.activation import ActivationSecrets
from signserver.ra.application import subject_parts
from signserver.ra.help_codes import IDENTITY_DATA_CHANGED, ONLY_IN_PERSON, REVOKE_FIRST
from signserver.ra.registry import MAX_PHOTO_BYTES, photo_media_type
from signserver.ra.renewal import (APPLICATION_SIGNING, REVOCATION_PHRASE, Renewal, State, Step, check_new_password,
                                   is_cloud_signature)
from signserver.ra.web.account_pages import PASSWORD_RULES, locked_text, password_rule_text
from signserver.ra.web.rendering import (FieldReader, field_errors, gettext, guidance, page_route, provider_of,
                                        read_form, redirect, render, text_field)
from signserver.ra.web.sessions import holder_may_act, session_of

log = logging.getLogger(__name__)

MAX_PDF_BYTES = 20 * 1024 * 1024  # as the JSON API: a one-page application with a signature or two
MULTIPART_OVERHEAD = 64 * 1024
PHOTO_FORM_BYTES = MAX_PHOTO_BYTES + MULTIPART_OVERHEAD
APPLICATION_FORM_BYTES = MAX_PDF_BYTES + MULTIPART_OVERHEAD
CODE_EXPIRIES = "code_expires"  # session data: {renewal id: {address: epoch seconds}} of the codes sent
PROGRESS_REFRESH_SECONDS = 3
WAITING_REFRESH_SECONDS = 30

# The steps, in the documents' order.
CONFIRMED = "confirmed"
CONSENT = "consent"
EMAIL = "email"
REGISTRY_WAIT = "registry_wait"
PHOTO = "photo"
REVIEW = "review"
APPLICATION = "application"
ACTIVATION = "activation"
PROGRESS = "progress"
OUTCOME = "outcome"
STEP_NUMBERS = {CONSENT: 1, EMAIL: 1, REGISTRY_WAIT: 2, PHOTO: 2, REVIEW: 3, APPLICATION: 3, ACTIVATION: 4,
                PROGRESS: 4, OUTCOME: 4}


def current_step(renewal: Renewal, unverified: list[str]) -> str:
    """The step a renewal is at, from its state and the steps it has done."""
    state = renewal.state
    if state in (State.AWAITING_CONFIRMATION, State.CONFIRMED):
        return CONFIRMED
    if state is State.WAITING_FOR_REGISTRY:
        return PHOTO if renewal.resume_step == Step.FACE else REGISTRY_WAIT
    if state is State.AWAITING_IDENTITY:
        if renewal.consent_at is None:
            return CONSENT
        if unverified or renewal.registry_checked_at is None:
            return EMAIL  # its "next" asks the registry once every address is verified
        if renewal.face_score is None:
            return PHOTO
        return REVIEW
    if state is State.AWAITING_APPLICATION:
        return APPLICATION
    if state is State.AWAITING_ACTIVATION:
        return ACTIVATION
    if state is State.ACTIVATING:
        return PROGRESS
    return OUTCOME  # activated, awaiting or completed in person, refused


def _code_refusal_text(request: Request, reason: str) -> str:
    texts = {
        "blocked": gettext(request, "Too many codes were asked or typed wrong for this address: it is blocked for "
                                    "this renewal. Ask %(provider)s to reopen it.", provider=provider_of(request)),
        "too_soon": gettext(request, "A code was sent less than a minute ago: use it, or wait a minute before "
                                     "asking for another."),
        "none": gettext(request, "No code was sent to this address yet: ask for one."),
        "used_up": gettext(request, "Too many wrong codes: ask for a new one."),
        "expired": gettext(request, "The code has expired: ask for a new one."),
    }
    return texts.get(reason) or gettext(request, "The code is not the one sent.")


def _step_refusal_text(request: Request, reason: str) -> str:
    if reason in PASSWORD_RULES:
        return password_rule_text(request, reason)[1]
    texts = {
        "photo_mismatch": gettext(request, "The photo does not meet the check's requirements; please take another "
                                           "photo."),
        "identity_mismatch": gettext(request, "Invalid personal data of the identity document: the renewal cannot "
                                              "be done online. Renew in person."),
        "limit_reached": gettext(request, "This step has been tried too many times for this renewal: ask "
                                          "%(provider)s to reopen it, or renew in person.",
                                          provider=provider_of(request)),
        "revocation_phrase": gettext(request, "The revocation phrase has 8 to 64 characters, letters and digits "
                                              "only."),
        "no_cloud_credential": gettext(request, "This certificate has no cloud-signature credential: upload the "
                                                "application signed with your electronic ID."),
        "password_missing": gettext(request, "Enter the cloud-signature password."),
        APPLICATION_SIGNING: gettext(request, "The application document is being signed: wait a moment, then look "
                                              "at the page again."),
        "not_verified": gettext(request, "Verify every e-mail address first."),
    }
    return texts.get(reason) or gettext(request, "This step cannot be done now: the page shows where the renewal "
                                                 "is.")


def refusal_text(request: Request, exc: Exception) -> str:
    """A refusal of the workflow (or of the core through it) as a sentence in the holder's language,
    chosen by its help code, its class and its ``reason`` (errors.Refusal, errors.CodeRefused)."""
    code = getattr(exc, "help_code", "")
    if code:
        return guidance(request, code)
    reason = getattr(exc, "reason", "")
    if isinstance(exc, errors.CodeRefused):
        return _code_refusal_text(request, reason)
    if isinstance(exc, errors.PhotoRefused):
        return gettext(request, "The photo cannot be used: choose a JPG, JPEG, PNG or TIFF file of at most 10 MB.")
    if isinstance(exc, errors.ApplicationRefused):
        if reason == "authentication":
            return gettext(request, "The cloud-signature password or the one-time password is not right.")
        if reason == "locked":
            return locked_text(request)
        return gettext(request, "The uploaded file is refused: upload the application document as downloaded, "
                                "signed with your own electronic ID, without changing it.")
    if isinstance(exc, errors.StepRefused):
        return _step_refusal_text(request, reason)
    if isinstance(exc, errors.RegistryUnavailable):
        return gettext(request, "The identity registry does not answer now: the renewal waits and goes on when it "
                                "does. Try again later.")
    if isinstance(exc, errors.CoreUnavailable):
        return gettext(request, "The certificate service does not answer now; try again later.")
    if isinstance(exc, errors.ConcurrentUpdate):
        return gettext(request, "The renewal changed meanwhile: look at it again.")
    return gettext(request, "This step cannot be done now: the page shows where the renewal is.")


# Why an activation stopped, by the renewal's refusal_reason (the RA's word or the core's reason).
WRONG_PASSWORD_REASONS = frozenset({"AUTHENTICATION_FAILED", "authentication"})
LOCKED_REASONS = frozenset({"ACCOUNT_LOCKED", "locked"})


def stopped_activation_text(request: Request, renewal: Renewal) -> str:
    """Why the last activation stopped, in the holder's language: chosen by the renewal's help code,
    else its stable refusal_reason, never by the words of its refusal; "" when none was recorded."""
    if renewal.help_code:
        return guidance(request, renewal.help_code)
    reason = renewal.refusal_reason
    if reason == "identity_changed" or not (reason or renewal.refusal):
        return ""  # none, or the identity steps' (AC-AB-0014), which the holder has done again since
    if reason in WRONG_PASSWORD_REASONS:
        return gettext(request, "Your cloud-signature password is not right.")
    if reason in LOCKED_REASONS:
        return locked_text(request)
    if reason in PASSWORD_RULES:  # the core refused the new password (errors.core_error)
        return password_rule_text(request, reason)[1]
    if reason == "registry_unavailable":
        return gettext(request, "The identity registry does not answer now; activate again later.")
    if reason == "core_unavailable":
        return gettext(request, "The certificate service does not answer now; try again later.")
    return gettext(request, "The activation did not complete; activate again.")


async def _renewal(request: Request, ctx) -> Renewal:
    """The renewal of the path, when the session may act on it.

    Raises: RenewalNotFound: none, or not one of this holder's (one answer for both)."""
    renewal_id = request.path_params["renewal_id"]
    try:
        renewal = await run_in_threadpool(ctx.workflow.get, renewal_id)
    except errors.RenewalNotFound:
        renewal = None
    if renewal is None or renewal.state is State.AWAITING_CONFIRMATION \
            or not holder_may_act(session_of(request), renewal):
        raise errors.RenewalNotFound("no such renewal")
    return renewal


def _code_expiries(request: Request, renewal: Renewal) -> dict[str, int]:
    return dict((session_of(request).get(CODE_EXPIRIES) or {}).get(renewal.id, {}))


def _remember_code(request: Request, ctx, renewal: Renewal, address: str) -> None:
    session = session_of(request)
    expiries = dict(session.get(CODE_EXPIRIES) or {})
    expiries = {renewal.id: {**expiries.get(renewal.id, {}),
                             address: int(ctx.clock.now().timestamp()) + ctx.settings.code_seconds}}
    session.set(CODE_EXPIRIES, expiries)  # only this renewal's: the session's data stays small


async def _account_holds_valid_certificate(ctx, account: str) -> bool:
    """Whether the account holds a valid certificate: the current password is then entered at
    activation, else a new one (the core's rule). Raises: CoreUnavailable."""
    from signserver.client import NotFound, SignServerClientError

    try:
        held = await run_in_threadpool(ctx.certificates.list_certificates, account)
    except NotFound:
        return False
    except SignServerClientError as exc:
        raise errors.core_error(exc) from None
    return any(c.status == "valid" for c in held)


async def _subject(ctx, renewal: Renewal) -> dict:
    """What the review shows of the old certificate (its subject and status), from the core; an
    empty part when the core does not answer."""
    from signserver.client import SignServerClientError

    try:
        record = await run_in_threadpool(ctx.certificates.get_certificate, renewal.serial)
    except (SignServerClientError, errors.CoreUnavailable):
        return {}
    organisation, department, title = subject_parts(record.certificate_der)
    return {"organisation": organisation, "department": department, "title": title, "status": record.status}


async def show_step(request: Request, ctx, renewal: Renewal | None = None, *, error: str = "",
                    field_errors: dict[str, str] | None = None, status: int = 200) -> Response:
    """The page of the renewal's current step, with ``error`` (a refusal) when given."""
    renewal = renewal or await _renewal(request, ctx)
    unverified = await run_in_threadpool(ctx.workflow.unverified_emails, renewal)
    step = current_step(renewal, unverified)
    now = int(ctx.clock.now().timestamp())
    expiries = _code_expiries(request, renewal)
    values = dict(renewal=renewal, step=step, step_number=STEP_NUMBERS.get(step, 1), error=error,
                  errors=field_errors or {}, guidance=lambda c: guidance(request, c),
                  help_code=renewal.help_code, help_text=guidance(request, renewal.help_code) if renewal.help_code
                  else "", cloud=is_cloud_signature(renewal.profile), base=f"/holder/renewals/{renewal.id}",
                  subject={})
    if step == EMAIL:
        values["addresses"] = [
            {"address": address, "verified": address not in unverified,
             "code_expires": (datetime.datetime.fromtimestamp(expiries[address], datetime.timezone.utc)
                              if expiries.get(address, 0) > now else None),
             "seconds_left": max(expiries.get(address, 0) - now, 0)}
            for address in renewal.emails]
        values["all_verified"] = not unverified
    elif step == REVIEW:
        values["subject"] = await _subject(ctx, renewal)
    elif step == ACTIVATION:
        values["subject"] = await _subject(ctx, renewal)
        values["holds_valid"] = await _account_holds_valid_certificate(ctx, renewal.account)
        values["stopped"] = stopped_activation_text(request, renewal)
        values["revoke_first"] = renewal.help_code == REVOKE_FIRST
    elif step == PROGRESS:
        values["refresh_seconds"] = PROGRESS_REFRESH_SECONDS
    elif step == REGISTRY_WAIT:
        values["refresh_seconds"] = WAITING_REFRESH_SECONDS
    elif step == OUTCOME:
        values["in_person"] = renewal.state is State.AWAITING_IN_PERSON
        if values["in_person"]:
            values["subject"] = await _subject(ctx, renewal)
        values["only_in_person"] = ONLY_IN_PERSON
    values["identity_changed"] = renewal.help_code == IDENTITY_DATA_CHANGED and step == CONSENT
    return render(request, f"renewal/{step}.html", status=status, **values)


async def renewal_page(request: Request, ctx) -> Response:
    return await show_step(request, ctx)


async def renewal_state(request: Request, ctx) -> Response:
    """The renewal's state as JSON, for the progress page's script to poll."""
    renewal = await _renewal(request, ctx)
    return JSONResponse({"state": renewal.state.value}, headers={"Cache-Control": "no-store"})


async def _act(request: Request, ctx, renewal: Renewal, work, *args) -> Response:
    """Run the workflow's ``work``; back to the renewal's page, or its refusal shown on the step."""
    try:
        await run_in_threadpool(work, *args)
    except (errors.StepRefused, errors.CodeRefused, errors.PhotoRefused, errors.ApplicationRefused,
            errors.RegistryUnavailable, errors.ConcurrentUpdate, errors.IdentityNotFound) as exc:
        fresh = await run_in_threadpool(ctx.workflow.get, renewal.id)
        return await show_step(request, ctx, fresh, error=refusal_text(request, exc), status=422)
    return redirect(f"/holder/renewals/{renewal.id}")


async def _ticked_step(request: Request, ctx, box: str, work, unticked: str) -> Response:
    """A step whose form is one box to tick: the workflow's ``work(renewal_id)`` once ``box`` is
    ticked, else the step again with ``unticked`` beside the box."""
    renewal = await _renewal(request, ctx)
    form = await read_form(request)
    if form.get(box) != "yes":
        return await show_step(request, ctx, renewal, status=422, field_errors={box: unticked})
    return await _act(request, ctx, renewal, work, renewal.id)


async def consent(request: Request, ctx) -> Response:
    return await _ticked_step(request, ctx, "consent", ctx.workflow.record_consent, gettext(
        request, "Tick the box to agree to the personal data collection statement."))


async def send_code(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request)
    address = text_field(form, "address", max_length=320)
    if address not in renewal.emails:
        raise errors.RenewalNotFound("no such address")
    ctx.limits.check(request, "renewal-code", renewal.account)
    try:
        sent = await run_in_threadpool(ctx.workflow.send_code, renewal.id, address)
    except (errors.StepRefused, errors.CodeRefused) as exc:
        return await show_step(request, ctx, renewal, error=refusal_text(request, exc), status=422)
    if sent:  # the page then says so beside the address, with the code's validity
        _remember_code(request, ctx, renewal, address)
    return redirect(f"/holder/renewals/{renewal.id}#code-{renewal.emails.index(address)}")


async def verify_code(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request)
    address = text_field(form, "address", max_length=320)
    if address not in renewal.emails:
        raise errors.RenewalNotFound("no such address")
    field = f"code-{renewal.emails.index(address)}"  # one field per address: ids unique on the page
    code = (text_field(form, field, required=False, max_length=16)
            or text_field(form, "code", required=False, max_length=16)).replace(" ", "")
    if not code:
        return await show_step(request, ctx, renewal, status=422, field_errors={
            field: gettext(request, "Enter the 6-digit code of the e-mail.")})
    ctx.limits.check(request, "renewal-code", renewal.account)
    return await _act(request, ctx, renewal, ctx.workflow.verify_code, renewal.id, address, code)


async def registry(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    await read_form(request)
    unverified = await run_in_threadpool(ctx.workflow.unverified_emails, renewal)
    if unverified:
        return await show_step(request, ctx, renewal, status=422,
                               error=gettext(request, "Verify every e-mail address first."))
    ctx.limits.check(request, "renewal-registry", renewal.account)
    return await _act(request, ctx, renewal, ctx.workflow.check_registry, renewal.id)


async def photo(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request, max_bytes=PHOTO_FORM_BYTES, files=True)
    upload = form.get("photo")
    content = await upload.read() if isinstance(upload, UploadFile) else b""
    if not content:
        return await show_step(request, ctx, renewal, status=422, field_errors={
            "photo": gettext(request, "Choose a photo of yourself (JPG, JPEG, PNG or TIFF).")})
    # The workflow tells the photo by its bytes; a file the registry would not take is refused here
    # already, by the same check, so that the form's rate limit does not count it either.
    try:
        photo_media_type(content)
    except errors.PhotoRefused as exc:
        return await show_step(request, ctx, renewal, error=refusal_text(request, exc), status=422)
    ctx.limits.check(request, "renewal-photo", renewal.account)
    return await _act(request, ctx, renewal, ctx.workflow.compare_face, renewal.id, content)


async def agreement(request: Request, ctx) -> Response:
    return await _ticked_step(request, ctx, "agree", ctx.workflow.accept_agreement, gettext(
        request, "Tick the box to accept the applicant/subscriber agreement and declaration."))


async def application_document(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    try:
        record = await run_in_threadpool(ctx.workflow.application_document, renewal.id)
    except errors.StepRefused as exc:
        return await show_step(request, ctx, renewal, error=refusal_text(request, exc), status=409)
    return Response(record.document, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="application-{renewal.id}.pdf"',
                             "Cache-Control": "no-store"})


async def sign_application(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request)
    fields = FieldReader(form)
    password = fields.secret("password")
    otp = fields.text("otp", max_length=16).replace(" ", "")
    if fields.problems:  # said on the field, on the step's page (a secret is not put back)
        return await show_step(request, ctx, renewal, status=422, field_errors=field_errors(request, fields))
    if not password:
        return await show_step(request, ctx, renewal, status=422, field_errors={
            "password": gettext(request, "Enter the cloud-signature password.")})
    ctx.limits.check(request, "renewal-sign", renewal.account)
    return await _act(request, ctx, renewal, ctx.workflow.sign_application, renewal.id, password, otp)


async def upload_application(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request, max_bytes=APPLICATION_FORM_BYTES, files=True)
    upload = form.get("signed")
    content = await upload.read() if isinstance(upload, UploadFile) else b""
    if not content:
        return await show_step(request, ctx, renewal, status=422, field_errors={
            "signed": gettext(request, "Choose the signed application document (PDF).")})
    ctx.limits.check(request, "renewal-upload", renewal.account)
    return await _act(request, ctx, renewal, ctx.workflow.upload_application, renewal.id, content)


async def activation(request: Request, ctx) -> Response:
    renewal = await _renewal(request, ctx)
    form = await read_form(request)
    fields = FieldReader(form)
    password, new_password, confirmation, phrase, phrase_again = (fields.secret(name) for name in (
        "password", "new_password", "confirmation", "revocation_phrase", "revocation_phrase_again"))
    if fields.problems:  # said on the field, on the step's page (a secret is not put back)
        return await show_step(request, ctx, renewal, field_errors=field_errors(request, fields), status=422)
    holds_valid = await _account_holds_valid_certificate(ctx, renewal.account)
    problems: dict[str, str] = {}
    if holds_valid and not password:
        problems["password"] = gettext(request, "Enter the cloud-signature password.")
    if not holds_valid:
        password = ""  # the account holds no valid certificate: a new password is set
        if not new_password:
            problems["new_password"] = gettext(request, "Enter a new cloud-signature password.")
        elif new_password != confirmation:
            problems["confirmation"] = gettext(request, "The new password and its confirmation differ.")
        else:  # the documents' rules, said on the field (the workflow checks them again)
            try:
                check_new_password(new_password, confirmation)
            except errors.StepRefused as exc:
                field, message = password_rule_text(request, exc.reason)
                problems[field] = message
    if not REVOCATION_PHRASE.fullmatch(phrase):
        problems["revocation_phrase"] = gettext(request, "The revocation phrase has 8 to 64 characters, letters "
                                                         "and digits only.")
    elif phrase != phrase_again:
        problems["revocation_phrase_again"] = gettext(request, "The revocation phrase and its repetition differ.")
    if problems:
        return await show_step(request, ctx, renewal, field_errors=problems, status=422)
    ctx.limits.check(request, "renewal-activation", renewal.account)
    given = ActivationSecrets(password=password, new_password="" if holds_valid else new_password,
                              revocation_phrase=phrase, asking_session=session_of(request).id_hash)
    return await _act(request, ctx, renewal, ctx.workflow.start_activation, renewal.id, given,
                      "" if holds_valid else confirmation)


def routes() -> list:
    base = "/holder/renewals/{renewal_id:str}"
    post = ("POST",)
    return [
        page_route(base, renewal_page, who="holder", name="renewal"),
        page_route(base + "/state", renewal_state, who="holder", name="renewal_state", touch=False),  # polled
        page_route(base + "/consent", consent, who="holder", methods=post),
        page_route(base + "/codes", send_code, who="holder", methods=post),
        page_route(base + "/codes/verify", verify_code, who="holder", methods=post),
        page_route(base + "/registry", registry, who="holder", methods=post),
        page_route(base + "/photo", photo, who="holder", methods=post, files=True, max_bytes=PHOTO_FORM_BYTES),
        page_route(base + "/agreement", agreement, who="holder", methods=post),
        page_route(base + "/application.pdf", application_document, who="holder", name="renewal_application"),
        page_route(base + "/application/sign", sign_application, who="holder", methods=post),
        page_route(base + "/application/upload", upload_application, who="holder", methods=post, files=True,
                   max_bytes=APPLICATION_FORM_BYTES),
        page_route(base + "/activation", activation, who="holder", methods=post),
    ]
