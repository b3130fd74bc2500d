"""The holder's home and certificates: /holder shows the renewals pending in the documents' three
lists ("awaiting identity verification", "awaiting online activation", "awaiting in-person
processing"), the recent outcomes with their help codes, and the holder's certificates (serial,
type, expiry, status); /holder/certificates/{serial}/revoke revokes one of them with the
revocation phrase set at its activation.

A holder signed in through a notice link sees only that link's renewal(s) and their certificates
(sessions.holder_may_act); one signed in with the cloud-signature account sees the account's.
The handlers raise, for page_route to render: PageNotFound (404: another account's certificate
looks like an unknown one), RateLimited (429), BadForm (400: not a form), CoreUnavailable (503); a
field too long or with a control character is said on the form's field (422)."""

from __future__ import annotations

import datetime
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from signserver.ra.errors import CoreUnavailable, OperationRefused
from signserver.ra.renewal import Renewal, State
from signserver.ra.web.rendering import (FieldReader, PageNotFound, field_errors, flash, gettext, guidance, page_route,
                                         read_form, redirect, render)
from signserver.ra.web.sessions import holder_may_act, session_of

log = logging.getLogger(__name__)

# The documents' three lists of pending renewals (web.md maps the states).
IDENTITY_LIST = "identity"
ACTIVATION_LIST = "activation"
IN_PERSON_LIST = "in_person"
PENDING_LISTS: dict[State, str] = {
    State.CONFIRMED: IDENTITY_LIST, State.AWAITING_IDENTITY: IDENTITY_LIST,
    State.WAITING_FOR_REGISTRY: IDENTITY_LIST, State.AWAITING_APPLICATION: IDENTITY_LIST,
    State.AWAITING_ACTIVATION: ACTIVATION_LIST, State.ACTIVATING: ACTIVATION_LIST,
    State.AWAITING_IN_PERSON: IN_PERSON_LIST,
}
FINISHED = (State.ACTIVATED, State.COMPLETED_IN_PERSON, State.REFUSED)
RECENT_OUTCOMES = 10
REVOCATION_FORM = "revoke"
NEVER = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)  # sorts a certificate without expiry last
HOLDER_ACTOR = "holder-web"  # who revoked, in the RA's audit trail (beside the account)
WRONG_PHRASE = "PERMISSION_DENIED"  # the core's reason for a revocation phrase that is not right


async def visible_renewals(request: Request, ctx) -> list[Renewal]:
    """The renewals of the signed-in holder this session may see, newest first."""
    session = session_of(request)
    renewals = await run_in_threadpool(ctx.workflow.renewals, (), session.subject)
    shown = [r for r in renewals if r.state is not State.AWAITING_CONFIRMATION and holder_may_act(session, r)]
    return sorted(shown, key=lambda r: r.updated_at, reverse=True)


async def held_certificates(request: Request, ctx, renewals: list[Renewal]) -> list | None:
    """The holder's certificates from the core (None when the core does not answer); for a
    session opened through a notice link, only those of its renewals (old and new)."""
    from signserver.client import NotFound, SignServerClientError

    session = session_of(request)
    try:
        certificates = await run_in_threadpool(ctx.certificates.list_certificates, session.subject)
    except NotFound:
        return []
    except (SignServerClientError, CoreUnavailable) as exc:
        log.warning("the holder's certificates cannot be listed: %s", type(exc).__name__)
        return None
    if session.get("via") == "notice":
        serials = {r.serial for r in renewals} | {r.new_serial for r in renewals if r.new_serial}
        certificates = [c for c in certificates if c.serial in serials]
    return sorted(certificates, key=lambda c: c.not_after or NEVER, reverse=True)


async def home(request: Request, ctx) -> Response:
    renewals = await visible_renewals(request, ctx)
    pending: dict[str, list[Renewal]] = {IDENTITY_LIST: [], ACTIVATION_LIST: [], IN_PERSON_LIST: []}
    for renewal in renewals:
        listed = PENDING_LISTS.get(renewal.state)
        if listed:
            pending[listed].append(renewal)
    outcomes = [r for r in renewals if r.state in FINISHED][:RECENT_OUTCOMES]
    certificates = await held_certificates(request, ctx, renewals)
    return render(request, "holder/home.html", pending=pending, outcomes=outcomes, certificates=certificates,
                  guidance=lambda c: guidance(request, c))


async def _own_certificate(request: Request, ctx, serial: str):
    """The signed-in holder's certificate ``serial`` as the session may see it, else None (another
    account's certificate and an unknown serial look alike)."""
    renewals = await visible_renewals(request, ctx)
    certificates = await held_certificates(request, ctx, renewals)
    if certificates is None:
        raise CoreUnavailable("the certificate service does not answer; try again later")
    return next((c for c in certificates if c.serial.lower() == serial.lower()), None)


def _revoke_page(request: Request, ctx, certificate, *, errors: dict[str, str] | None = None,
                 status: int = 200, understood: bool = False) -> Response:
    """The revocation form; after a refusal the box stays as the holder ticked it (the phrase, a
    secret, is never put back)."""
    return render(request, "holder/revoke.html", status=status, certificate=certificate, errors=errors or {},
                  understood=understood)


async def revoke(request: Request, ctx) -> Response:
    serial = request.path_params["serial"]
    certificate = await _own_certificate(request, ctx, serial)
    if certificate is None:
        raise PageNotFound("not a certificate of the holder's")  # an unknown serial looks alike
    if request.method == "GET":
        return _revoke_page(request, ctx, certificate)
    session = session_of(request)
    ctx.limits.check(request, REVOCATION_FORM, session.subject)
    form = await read_form(request)
    fields = FieldReader(form)
    errors: dict[str, str] = {}
    phrase = fields.secret("revocation_phrase")
    if not phrase:
        errors["revocation_phrase"] = gettext(request, "Enter the certificate's revocation phrase.")
    errors.update(field_errors(request, fields))  # too long or not text: said on the field
    understood = form.get("understood") == "yes"
    if not understood:
        errors["understood"] = gettext(request, "Confirm that you understand revocation cannot be undone.")
    if certificate.status != "valid":
        errors["revocation_phrase"] = gettext(request, "Only a valid certificate can be revoked.")
    if errors:
        return _revoke_page(request, ctx, certificate, errors=errors, status=422, understood=understood)
    try:
        await run_in_threadpool(ctx.operations.revoke_by_holder, certificate.serial, session.subject, phrase,
                                f"{HOLDER_ACTOR}:{session.subject}"[:128], "unspecified")
    except OperationRefused as exc:
        if exc.reason == WRONG_PHRASE:
            errors["revocation_phrase"] = gettext(request, "The revocation phrase is not right.")
        else:
            errors["revocation_phrase"] = gettext(request, "The certificate cannot be revoked: it is not valid "
                                                           "any more.")
        return _revoke_page(request, ctx, certificate, errors=errors, status=422, understood=understood)
    flash(request, gettext(request, "Certificate %(serial)s is revoked.", serial=certificate.serial), "success")
    return redirect("/holder")


def routes() -> list:
    return [
        page_route("/holder", home, who="holder", name="holder_home"),
        page_route("/holder/certificates/{serial:str}/revoke", revoke, who="holder", methods=("GET", "POST"),
                   name="holder_revoke"),
    ]
