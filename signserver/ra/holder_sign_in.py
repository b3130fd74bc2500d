"""HolderSignIn: a holder without a cloud-signature sign-in reaches a renewal through the link of
its notice e-mail and a code e-mailed on demand.

The link (``/notice/{renewal_id}/{token}``) carries the renewal's holder token. Following it spends
nothing (mail scanners fetch links): it only notes, in the anonymous web session, which renewal
and which token (by its SHA-256) the browser came with (NoticeSignIn). The holder then asks for a
6-digit code, e-mailed to every address the notice went to; the right code spends the link (the
renewal's holder token stops working, for the JSON API too) and signs the holder in for that
renewal alone. A lost or spent link is replaced by asking for a new one by e-mail address.

Limits: each code allows code_attempts guesses and lives code_seconds; per renewal at most
code_sends codes between two sign-ins (a sign-in with the right code starts their count again) and
code_failures wrong codes in all (kept in ra_code_limits under the key SIGN_IN_LIMITS, apart from
the addresses' identity codes; an operator's reopen-limits resets them), so guessing does not go on
by following the link again in a fresh session. A code is kept in
ra_email_verifications under the same key, its attempts counted there, and the session keeps only
its id: guesses sent at once in one session, each reading the session before any writes it back,
cannot each count from the same copy.

The token and the code exist in the e-mails only: the session keeps the token's SHA-256 (plain: the
token is 32 random bytes, beyond guessing), the database the code's salted hash, the audit trail
neither."""

from __future__ import annotations

import datetime
import hmac
from dataclasses import dataclass, replace

from signserver.clock import Clock
from signserver.ra import codes, holder_token, messages
from signserver.ra import renewal as machine
from signserver.ra.codes import EmailVerification
from signserver.ra.errors import CodeRefused, HolderNotAuthorised, SignInCodeRefused, StepRefused
from signserver.ra.renewal import Renewal
from signserver.ra.settings import RaSettings
from signserver.ra.steps import HOLDER
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase

# The ra_code_limits key that counts a renewal's sign-in codes (never an e-mail address: no "@").
SIGN_IN_LIMITS = "(notice sign-in)"
RESEND_AFTER = datetime.timedelta(seconds=60)
LINK_NOT_VALID = "the link is not valid (any more); ask for a new one"
BLOCKED = ("too many sign-in codes were asked or typed wrong for this renewal; "
           "ask the registration authority to reopen it")
NO_CODE = "no code was sent yet; ask for one"
MAX_CODE_ID = 2 ** 31 - 1  # ra_email_verifications.id is an Integer: a larger one names no code


@dataclass
class NoticeSignIn:
    """What the anonymous session keeps between the notice link and the code: the renewal, the
    link's token by its SHA-256, and the id of the code sent last (ra_email_verifications.id)."""

    renewal_id: str
    link_hash: str
    code_id: int | None = None

    def to_data(self) -> dict:
        """A JSON value for the session's data."""
        data = {"renewal": self.renewal_id, "link": self.link_hash}
        if self.code_id is not None:
            data["code"] = self.code_id
        return data

    @classmethod
    def from_data(cls, data) -> "NoticeSignIn | None":
        """The value to_data made, or None for anything else (no link followed in this session;
        a session an older RA kept the whole code in follows the link again)."""
        try:
            code_id = data.get("code")
            if code_id is not None and (type(code_id) is not int or not 0 < code_id <= MAX_CODE_ID):
                return None
            return cls(str(data["renewal"]), str(data["link"]), code_id)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class NoticeShown:
    """What the notice page shows: the addresses a code goes to (the notice's), and when the code
    the session asked for expires (None: none asked)."""

    addresses: tuple[str, ...]
    code_expires: datetime.datetime | None


def mask_address(address: str) -> str:
    """``kuan@example.mo`` -> ``k***@example.mo``: enough for the holder to know which mailbox."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"


class HolderSignIn:
    """The notice link's sign-in: follow the link, send a code, verify it (spending the link), and
    new links by e-mail address. Each step is one transaction of the RA's database."""

    def __init__(self, database: RaDatabase, clock: Clock, settings: RaSettings):
        self._database = database
        self._clock = clock
        self._settings = settings

    def follow_link(self, renewal_id: str, token: str) -> NoticeSignIn:
        """What the session keeps for a link that holds (its token is the renewal's, not expired,
        the renewal under way). Spends and records nothing.

        Raises: HolderNotAuthorised: one answer for a wrong, spent or expired token and for a
                renewal that does not exist.
        """
        with self._database.transaction() as conn:
            renewal = repository.find_renewal(conn, renewal_id)
        self._require_link(renewal, holder_token.token_hash(token))
        return NoticeSignIn(renewal.id, holder_token.token_hash(token))

    def shown(self, pending: NoticeSignIn) -> NoticeShown:
        """What the notice page shows for ``pending``.

        Raises: HolderNotAuthorised: the link no longer holds.
        """
        with self._database.transaction() as conn:
            renewal = repository.find_renewal(conn, pending.renewal_id)
            self._require_link(renewal, pending.link_hash)
            sent = self._code(conn, pending)
        return NoticeShown(renewal.emails, sent.expires_at if sent is not None else None)

    def send_code(self, pending: NoticeSignIn) -> NoticeSignIn:
        """E-mail a new code to the renewal's addresses; returns what the session keeps now.

        Raises: HolderNotAuthorised: the link no longer holds; SignInCodeRefused: a code went out less
                than a minute ago, or the renewal's sign-in codes are used up (code_sends sent since the
                last sign-in, or code_failures wrong).
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            renewal = repository.find_renewal(conn, pending.renewal_id, for_update=True)  # senders take turns
            self._require_link(renewal, pending.link_hash)
            earlier = self._code(conn, pending)
            if earlier is not None and now - earlier.created_at < RESEND_AFTER:
                raise SignInCodeRefused(f"a code was sent less than {RESEND_AFTER.seconds} seconds ago; use it or "
                                        "wait", "too_soon")
            if repository.code_limits_of(conn, renewal.id, SIGN_IN_LIMITS).blocked:
                raise SignInCodeRefused(BLOCKED, "blocked")
            if not repository.count_code_sent(conn, renewal.id, SIGN_IN_LIMITS, self._settings.code_sends):
                raise SignInCodeRefused(BLOCKED, "blocked")
            verification, code = codes.issue(renewal.id, SIGN_IN_LIMITS, now, self._settings.code_seconds)
            code_id = repository.add_verification(conn, verification)
            repository.queue_email(conn, now, renewal.emails,
                                   *messages.sign_in_code(code, max(self._settings.code_seconds // 60, 1)),
                                   discard_after=verification.expires_at, renewal_id=renewal.id)
            repository.audit(conn, now, HOLDER, "sign_in_code_sent", renewal.id,
                             f"addresses={len(renewal.emails)}")
        return replace(pending, code_id=code_id)

    def verify(self, pending: NoticeSignIn, code: str) -> Renewal:
        """The renewal signed in to, when ``code`` is the one sent: the link is spent (the renewal's
        holder token stops working) and the count of sign-in codes sent starts again. The attempt
        is counted in the database whatever the outcome.

        Raises: HolderNotAuthorised: the link no longer holds; SignInCodeRefused: no code sent, wrong,
                expired, its attempts used up, or the renewal's sign-in codes are used up.
        """
        now = self._clock.now()
        if pending.code_id is None:
            raise SignInCodeRefused(NO_CODE, "none")
        with self._database.transaction() as conn:
            renewal = repository.find_renewal(conn, pending.renewal_id, for_update=True)  # guesses take turns
            self._require_link(renewal, pending.link_hash)
            if repository.code_limits_of(conn, renewal.id, SIGN_IN_LIMITS).blocked:
                raise SignInCodeRefused(BLOCKED, "blocked")
            sent = self._code(conn, pending)
            if sent is None:
                raise SignInCodeRefused(NO_CODE, "none")
            try:
                counted, matched = codes.attempt(sent, code, now, self._settings.code_attempts)
            except CodeRefused as exc:
                raise SignInCodeRefused(str(exc), exc.reason) from None
            # Counted by the database (attempts + 1, below the limit), never written from the row read.
            if not repository.record_attempt(conn, counted, self._settings.code_attempts):
                raise SignInCodeRefused("too many wrong codes; ask for a new one", "used_up")
            if matched:
                spent = repository.save_renewal(conn, replace(renewal, holder_token_hash="", updated_at=now))
                # code_sends bounds the codes asked between two sign-ins, not the holder's visits: a
                # code used is no guess, and the wrong ones stay counted toward code_failures.
                repository.reset_codes_sent(conn, renewal.id, SIGN_IN_LIMITS)
                repository.audit(conn, now, HOLDER, "notice_link_spent", renewal.id, "signed in with an e-mail code")
                return spent
            repository.audit(conn, now, HOLDER, "sign_in_code_wrong", renewal.id)
            limits = repository.count_code_failure(conn, renewal.id, SIGN_IN_LIMITS, self._settings.code_failures,
                                                   now)
            refusal = (SignInCodeRefused(BLOCKED, "blocked") if limits.blocked
                       else SignInCodeRefused("the code is not the one sent", "wrong"))
        raise refusal  # after the commit, so the wrong code stays counted

    def new_link(self, address: str) -> int:
        """E-mail a new link (a new holder token; the one before stops working) to ``address`` for
        each renewal under way, past its first notice, that lists it; returns how many (the page
        answers the same whatever it is).

        Raises: StoreUnavailable; SettingsError: the pages' address, for the link, is not known
                (RaSettings.pages_url; known wherever the pages are served).
        """
        wanted = address.strip().casefold()
        if "@" not in wanted:
            return 0
        pages = self._settings.pages_url()
        now = self._clock.now()
        sent = 0
        with self._database.transaction() as conn:
            for renewal in repository.renewals_listing_address(conn, wanted):
                listed = next(a for a in renewal.emails if a.casefold() == wanted)
                token, token_hash = holder_token.new_token()
                try:
                    moved = machine.new_holder_token(renewal, token_hash, now)
                except StepRefused:
                    continue  # no notice yet, or over
                repository.save_renewal(conn, moved)
                repository.queue_email(conn, now, [listed],
                                       *messages.renewal_notice(renewal.id, token, renewal.serial, renewal.profile,
                                                                renewal.expires, public_url=pages),
                                       discard_after=moved.holder_token_expires, renewal_id=renewal.id)
                repository.audit(conn, now, HOLDER, "notice_link_renewed", renewal.id, "asked by e-mail address")
                sent += 1
        return sent

    # Helpers

    def _code(self, conn, pending: NoticeSignIn) -> EmailVerification | None:
        """The code the session asked for last, if it is one of the renewal's sign-in codes."""
        sent = repository.find_verification(conn, pending.code_id) if pending.code_id is not None else None
        if sent is None or sent.renewal_id != pending.renewal_id or sent.address != SIGN_IN_LIMITS:
            return None
        return sent

    def _require_link(self, renewal: Renewal | None, link_hash: str) -> None:
        """Raises: HolderNotAuthorised: no such renewal, another token (spent or replaced), expired,
        or the renewal is over."""
        stored = renewal.holder_token_hash if renewal is not None else ""
        matches = bool(stored) and hmac.compare_digest(stored, link_hash)
        if renewal is None or not machine.holder_may_call(renewal, matches, self._clock.now()):
            raise HolderNotAuthorised(LINK_NOT_VALID)
