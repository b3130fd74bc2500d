"""What every page handler is given: the RA's parts, made once at start (server.build_web_context)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signserver.clock import Clock
from signserver.ra.settings import RaSettings

if TYPE_CHECKING:
    from signserver.ra.operations import RaOperations
    from signserver.ra.web.captcha import Captcha
    from signserver.ra.web.limits import RateLimits
    from signserver.ra.web.rendering import Templates
    from signserver.ra.web.sessions import SessionStore
    from signserver.ra.workflow import RenewalWorkflow


@dataclass
class WebContext:
    settings: RaSettings
    clock: Clock
    workflow: RenewalWorkflow  # the renewal's steps (workflow.py, application.py, activation.py); it
    # reaches the core as the ra-application application itself (the application document)
    operations: RaOperations  # the operators' actions (operations.py)
    certificates: Any  # the core as the RA (a CoreConnection to a CertificateClient): holders' sign-in,
    # password change, certificates, revocation
    operators: Any  # OperatorAccounts (operator_accounts.py): the operators' sign-in; page_route asks its
    # is_active on every request of a signed-in operator
    sessions: SessionStore
    limits: RateLimits
    captcha: Captcha
    templates: Templates
    holder_sign_in: Any = None  # HolderSignIn (holder_sign_in.py): the notice link's sign-in
