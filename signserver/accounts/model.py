"""What the accounts domain speaks: plain dataclasses."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from signserver.hsm.algorithms import KeyAlgorithm


class AccountKind(enum.Enum):
    PERSONAL = "personal"
    CORPORATE = "corporate"
    GOVERNMENT = "government"


class AccountStatus(enum.Enum):
    ACTIVE = "active"
    LOCKED = "locked"  # shown when locked_until is in the future; stored status stays active
    DISABLED = "disabled"


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    holder_name: str
    emails: tuple[str, ...]
    kind: AccountKind
    organisation: str
    department: str
    title: str
    status: AccountStatus
    locked_until: datetime.datetime | None  # lockout state is kept by name: see lockout.py
    failed_attempts: int  # in the current run of failures
    password_changed_at: datetime.datetime
    created_at: datetime.datetime
    # As the identity documents show them; empty for accounts enrolled before they were held.
    given_name: str = ""
    surname: str = ""


@dataclass(frozen=True)
class Credential:
    """A signing key that belongs to one account: a signing data package (key_store "package",
    key_id naming it) or, for credentials made before packages, a key on the token."""

    id: str
    account_id: int
    username: str
    key_id: str
    key_algorithm: KeyAlgorithm
    status: str
    description: str
    created_at: datetime.datetime
    key_store: str = "token"

    @property
    def is_package(self) -> bool:
        return self.key_store == "package"


@dataclass(frozen=True)
class NewAccount:
    """What enrolment hands back once, and never again: the OTP seed and the recovery code."""

    account: Account
    credential: Credential
    otp_uri: str
    recovery_code: str


@dataclass(frozen=True)
class Application:
    """An application service provider allowed to call the signing API."""

    id: int
    name: str
    otp_required: bool
    all_accounts: bool
    accounts: tuple[str, ...]  # usernames it may serve when not all_accounts
    has_api_key: bool
    client_certificate_sha256: str | None
    status: str
    one_call_signing: bool = True  # may send the holder's factors with the document

    def names(self, username: str) -> bool:
        """Whether the policy names the account: the operator told the application about it, so
        it may learn the account's credentials and full status without the holder's factors."""
        return not self.all_accounts and username in self.accounts
