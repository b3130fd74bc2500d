"""The issued certificates in pages: the page size asked for, bounded, and the token that names where
the next page starts (Google's API design guide, AIP-158). A listing of every account holds a
million certificates at a national scale: one answer would be a gigabyte."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from signserver.ca.repository import LISTED_STATUSES, IssuedCertificate, PagePosition
from signserver.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
# About 900 KB of certificates (EC, DER included): well within gRPC's default 4 MiB messages.
MAX_PAGE_SIZE = 1000
# A token is about 120 characters; anything much longer was not made here.
MAX_TOKEN_CHARACTERS = 512
_CHECK_BYTES = 12
_SERIAL = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class CertificatePage:
    certificates: list[IssuedCertificate]
    next_page_token: str  # "" on the last page


def page_size(asked: int) -> int:
    """The certificates a page holds: ``asked``, 0 meaning the default, bounded by the maximum."""
    return min(asked or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


MOST_LISTED_ACCOUNTS = 100  # the accounts one listing may name: an RA's search shows at most as many holders


@dataclass(frozen=True)
class CertificateListing:
    """One listing's filters, which its page tokens are bound to: a token read with other filters
    would start a page at a place that listing never reached. ``status``: "" (any) or one of
    LISTED_STATUSES.

    Raises: InvalidArgument (field status): another status; (field accounts): both an account and
            a set of them, or a set of more than MOST_LISTED_ACCOUNTS.
    """

    username: str
    expiring_within_days: int
    status: str = ""
    usernames: frozenset[str] = frozenset()  # a listing of several accounts' (username then "")

    def __post_init__(self) -> None:
        if self.usernames and self.username:
            raise InvalidArgument("accounts lists several accounts instead of account: name one or the other",
                                  field="accounts")
        if len(self.usernames) > MOST_LISTED_ACCOUNTS:
            raise InvalidArgument(f"accounts names at most {MOST_LISTED_ACCOUNTS} accounts", field="accounts")
        if self.status and self.status not in LISTED_STATUSES:
            raise InvalidArgument(f"status is {', '.join(LISTED_STATUSES)} or empty (any status)", field="status")

    def token(self, last: PagePosition) -> str:
        """The token of the page after the one that ended at ``last``."""
        payload = [last.issued_at, last.serial]
        return base64.urlsafe_b64encode(json.dumps([*payload, self._check(payload)]).encode()).decode().rstrip("=")

    def position(self, token: str) -> PagePosition | None:
        """Where the page of ``token`` starts (after that position); None for the first page.

        The token carries a digest of its position and this listing's filters. It is a check, not
        a signature: an RA may list every certificate anyway, so a made-up position gains nothing;
        the check refuses a token damaged, cut short or used with other filters.

        Raises: InvalidArgument (field page_token): a token that is not one of this listing's.
        """
        if not token:
            return None
        try:
            found = self._read(token)
        except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
            found = None
        if found is None:
            raise InvalidArgument("page_token is not the next_page_token of an earlier page of this listing (the "
                                  "same account, expiring_within_days and status)", field="page_token")
        return found

    def _read(self, token: str) -> PagePosition | None:
        """Raises: ValueError, binascii.Error, UnicodeDecodeError, TypeError: not a token at all."""
        if len(token) > MAX_TOKEN_CHARACTERS:
            return None
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        issued_at, serial, check = json.loads(raw.decode())
        if type(issued_at) is not int or not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
            return None
        if check != self._check([issued_at, serial]):
            return None
        return PagePosition(issued_at, serial)

    def _check(self, payload: list) -> str:
        # The status only when there is one: a listing of any status binds its tokens as before the
        # status was a filter, so that a token of a node not yet upgraded is read by one that is.
        # Likewise the set of accounts only when there is one.
        filters = [self.username, self.expiring_within_days] + ([self.status] if self.status else []) + (
            [sorted(self.usernames)] if self.usernames else [])
        bound = json.dumps([*filters, *payload]).encode()
        return hashlib.sha256(bound).digest()[:_CHECK_BYTES].hex()
