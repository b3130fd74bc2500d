"""AccountManager: enrolment, password change, recovery, OTP reset, disable and enable."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from sqlalchemy import Connection, insert, select, update

from signserver.accounts import holder_seal, otp
from signserver.accounts.authentication import Authenticated, Authenticator
from signserver.accounts.lock_notices import LockNotices
from signserver.accounts.lockout import LockState, LockoutPolicy
from signserver.accounts.model import Account, AccountKind, NewAccount
from signserver.accounts.packages import (
    PACKAGE,
    SealKey,
    SigningPackages,
    account_seal,
    insert_package,
    new_seal_key,
    open_seal_key,
    seal_columns,
    seal_key_for_same_code,
    seal_key_values,
)
from signserver.accounts.passwords import (
    PasswordRejected,
    SecretHasher,
    check_password_rules,
    check_revocation_phrase,
    new_recovery_code,
    normalise_recovery_code,
)
from signserver.accounts.seal_rotation import reseal_packages
from signserver.accounts.repository import (
    account_row,
    delete_account_emails,
    get_account,
    get_credential,
    insert_account,
    insert_credential,
    list_accounts,
    update_account,
)
from signserver.audit.log import AuditLog
from signserver.clock import Clock, epoch_seconds
from signserver.errors import (
    AlreadyExists,
    AuthenticationBusy,
    AuthenticationFailed,
    InvalidArgument,
    NotFound,
    SignServerError,
)
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.sealing import SealingKey
from signserver.notify.outbox import format_time, queue_email
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import account_emails, accounts, activation_tokens, credentials

log = logging.getLogger(__name__)

# A certificate carries the account name as its subject's serialNumber, a PrintableString: no
# '_' or '@' (accounts made before this rule keep theirs; their certificates carry ':' and '/' in
# those places, see signserver.ca.issuance.certified_account_name).
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{2,63}$")
# One mailbox, nothing else: no character that would make the address a list or a display name
# ("a@b.mo,c@d.mo", "Name <a@b.mo>"), which a mail server would take for other recipients.
_ATOM = r'[^@\s,;:<>()\[\]\\"]'
EMAIL = re.compile(rf"^{_ATOM}{{1,64}}@{_ATOM}+\.{_ATOM}+$")
MAX_EMAILS = 10
MAX_TEXT = 200
# What a certificate's subject holds of the holder's name, organisation, department and title
# (X.520's upper bound for each): an account with more could never get a certificate.
MAX_SUBJECT_TEXT = 64


def check_username(username: str) -> None:
    """Raises: InvalidArgument: not 3 to 64 letters, digits, '.', '-', starting alphanumeric."""
    if not USERNAME.match(username):
        raise InvalidArgument("an account name has 3 to 64 characters: ASCII letters, digits, '.' and '-', the "
                              "first a letter or digit (a certificate carries it, and no other character fits)",
                              field="account")


def check_text(field: str, value: str, required: bool = False, limit: int = MAX_TEXT) -> str:
    """Raises: InvalidArgument: empty when required, longer than ``limit``, or with control characters."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > limit:
        raise InvalidArgument(f"{field} has at most {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{field} must not contain control characters")
    return value


def holder_names(given_name: str, surname: str) -> dict[str, str]:
    """The holder's given name and surname, checked: both or neither, since a certificate of a
    natural person names both (ETSI EN 319 412-2) and one alone would name nobody.

    Raises: InvalidArgument: one without the other, too long, or with control characters.
    """
    names = {"given_name": check_text("the given name", given_name), "surname": check_text("the surname", surname)}
    if bool(names["given_name"]) != bool(names["surname"]):
        raise InvalidArgument("give the holder's given name and surname together (both, or neither)")
    return names


def check_emails(emails: tuple[str, ...]) -> tuple[str, ...]:
    """Raises: InvalidArgument: none, too many, or one that is not an address."""
    if not emails:
        raise InvalidArgument("an account needs at least one e-mail address")
    if len(emails) > MAX_EMAILS:
        raise InvalidArgument(f"an account has at most {MAX_EMAILS} e-mail addresses")
    for address in emails:
        # \s leaves out most control characters, NUL among them, which PostgreSQL cannot keep.
        if len(address) > 254 or not EMAIL.match(address) or any(ord(c) < 32 or ord(c) == 127 for c in address):
            raise InvalidArgument(f"{address[:80]!r} is not an e-mail address")
    return tuple(dict.fromkeys(a.strip() for a in emails))


@dataclass(frozen=True)
class Enrolment:
    """What an operator enters to create an account."""

    username: str
    holder_name: str
    emails: tuple[str, ...]
    kind: AccountKind = AccountKind.PERSONAL
    organisation: str = ""
    department: str = ""
    title: str = ""
    # The holder's names as the identity documents show them (ETSI EN 319 412-2 wants both in the
    # certificates of natural persons): "Weng Sam LUZIA" and "KUAN", or "詠心" and "關".
    given_name: str = ""
    surname: str = ""
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA_2048
    revocation_phrase: Secret | None = None
    # The documents' "recovery by code": a code that, with an operator, unlocks the account and
    # the holder's signing data packages when the password is forgotten. Without it a forgotten
    # password leaves the packages unusable for good.
    recovery_by_code: bool = True


@dataclass(frozen=True)
class NewPassword:
    """A password set without the old one, made ready outside the transaction that stores it
    (:meth:`AccountManager.prepare_password`): its verifier and the new seal key locked under it."""

    password_hash: str = field(repr=False)
    seal: SealKey = field(repr=False)

    @property
    def seal_public(self) -> bytes:
        """The public half of the new seal key: what a package made for this password is sealed to."""
        return self.seal.public


class AccountManager:
    def __init__(self, database: Database, packages: SigningPackages, sealing: SealingKey, hasher: SecretHasher,
                 lockout: LockoutPolicy, authenticator: Authenticator, audit: AuditLog, clock: Clock):
        self._database = database
        self.packages = packages
        self._sealing = sealing
        self._hasher = hasher
        self._lockout = lockout
        self._authenticator = authenticator
        self._names = authenticator.names
        self._audit = audit
        self._clock = clock

    def create(self, enrolment: Enrolment, password: Secret, operator: str) -> NewAccount:
        """Create an account with its signing data package, an OTP seed and (when chosen) a
        recovery code.

        The holder's key is generated in the HSM and kept only as a package sealed to the holder
        (see SigningPackages). The OTP URI and the recovery code are returned once and stored only
        sealed or hashed.

        Raises:
            InvalidArgument (PasswordRejected among them): a field breaks its rule.
            AlreadyExists: the username is taken.
            UnsupportedAlgorithm: the token cannot make or wrap that kind of key.
            HsmError: the key could not be generated.
        """
        check_username(enrolment.username)
        holder = check_text("the holder's name", enrolment.holder_name, required=True, limit=MAX_SUBJECT_TEXT)
        emails = check_emails(enrolment.emails)
        fields = {name: check_text(name, getattr(enrolment, name), limit=MAX_SUBJECT_TEXT)
                  for name in ("organisation", "department", "title")}
        fields.update(holder_names(enrolment.given_name, enrolment.surname))
        if enrolment.kind is not AccountKind.PERSONAL and not fields["organisation"]:
            raise InvalidArgument(f"a {enrolment.kind.value} account needs its organisation")
        check_password_rules(password.reveal(), enrolment.username)
        if enrolment.revocation_phrase is not None:
            check_revocation_phrase(enrolment.revocation_phrase.reveal())
        with self._database.transaction() as conn:
            if account_row(conn, enrolment.username) is not None:
                raise AlreadyExists(f"an account {enrolment.username!r} already exists")

        now = self._clock.now()
        seed = otp.new_seed()
        password_hash, password_key = self._hasher.hash_with_key(password.reveal())
        recovery_code, recovery_hash, recovery_key = "", "", None
        if enrolment.recovery_by_code:
            recovery_code = new_recovery_code()
            recovery_hash, recovery_key = self._hasher.hash_with_key(normalise_recovery_code(recovery_code))
        _, seal = new_seal_key(enrolment.username, password_key, recovery_key)
        hashes = {
            "password_hash": password_hash,
            "recovery_code_hash": recovery_hash,
            "revocation_phrase_hash": (self._hasher.hash(enrolment.revocation_phrase.reveal())
                                       if enrolment.revocation_phrase else None),
        }
        sealed_seed = self._sealing.seal(seed.encode("ascii"), enrolment.username.encode("utf-8"))
        package = self.packages.make(enrolment.username, seal.public, enrolment.key_algorithm)
        name_key = self._names.key_of(enrolment.username)
        with self._database.transaction() as conn:
            account_id = insert_account(conn, username=enrolment.username, holder_name=holder, emails=emails,
                                        kind=enrolment.kind, otp_seed_sealed=sealed_seed, now=now, name_key=name_key,
                                        key_algorithm=enrolment.key_algorithm.value, **seal_columns(seal),
                                        **fields, **hashes)
            insert_package(conn, package)
            credential_id = insert_credential(conn, account_id, package["key_id"], enrolment.key_algorithm,
                                              "cloud signature key", now, key_store=PACKAGE)
            self._audit.append(conn, now, "account.created", operator, enrolment.username, kind=enrolment.kind.value,
                               recovery_by_code=enrolment.recovery_by_code)
            self._audit.append(conn, now, "key.generated", operator, enrolment.username,
                               credential=credential_id, package=package["key_id"],
                               algorithm=enrolment.key_algorithm.value, master=package["master_label"])
            account = get_account(conn, enrolment.username, now)
            credential = get_credential(conn, credential_id)
        log.info("created account %s with credential %s", enrolment.username, credential.id)
        return NewAccount(account=account, credential=credential,
                          otp_uri=otp.provisioning_uri(seed, enrolment.username), recovery_code=recovery_code)

    def get(self, username: str) -> Account:
        """Raises: NotFound. HsmError, DataCorrupted (the lockout's key: see NameKeys)."""
        name_key = self._names.key_of(username)
        with self._database.read() as conn:
            return get_account(conn, username, self._clock.now(), name_key)

    def lock_state(self, username: str) -> LockState:
        """The name's lock, which every name has, with an account or not (so it tells nobody
        whether the account exists).

        Raises: HsmError, DataCorrupted (the lockout's key: see NameKeys)."""
        name_key = self._names.key_of(username)
        with self._database.read() as conn:
            return self._lockout.state(conn, name_key, self._clock.now())

    def list(self) -> list[Account]:
        """Raises: HsmError, DataCorrupted (the lockout's key: see NameKeys)."""
        key_of = self._names.hasher()
        with self._database.read() as conn:
            return list_accounts(conn, self._clock.now(), key_of)

    def change_password(self, username: str, old: Secret, new: Secret, confirmation: Secret,
                        otp_code: str | None, otp_required: bool, actor: str) -> None:
        """Change the password after checking the current one (which counts toward the lockout).

        The account gets a new seal key, locked under the new password (and sealed for the
        recovery code as the old one was, where its form allows: see
        signserver/accounts/seal_rotation.py), and its packages are re-sealed to it, so the old
        password opens nothing current even with an older copy of the database. Outstanding
        activation tokens are revoked and the holder is e-mailed. The checks made
        before the factors depend only on the request, and the factors are checked as for
        Authorize, so a refusal never tells an unknown name from a wrong password.

        Raises:
            PasswordRejected (an InvalidArgument): the confirmation differs, or the new password
                breaks a rule (``rule`` names it).
            AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy: as
                Authenticator.authenticate; AccountDisabled and AuthenticationBusy also when the
                account was disabled, or its password, seal key or OTP changed, while they were
                checked (nothing was changed).
        """
        if new.reveal() != confirmation.reveal():
            raise PasswordRejected("the new password and its confirmation differ", "confirmation_differs")
        check_password_rules(new.reveal(), username)
        if new.reveal() == old.reveal():
            raise PasswordRejected("the new password must differ from the current one", "unchanged")
        holder = self._authenticator.authenticate_holder(username, old, otp_code, otp_required, actor)
        account = holder.account
        new_hash, new_key = self._hasher.hash_with_key(new.reveal())
        private, public = holder_seal.new_seal_key()
        now = self._clock.now()
        with self._database.transaction() as conn:
            by_recovery = account_seal(conn, account.id).seal_key_by_recovery
            seal = seal_key_values(username, private, public, new_key, None)
            values = {**seal_columns(seal), "seal_key_by_recovery": seal_key_for_same_code(username, private,
                                                                                            by_recovery)}
            # Only over the account as its factors were checked (and its recovery code's value as
            # read): a disable, reset, unlock or new recovery code meanwhile wins.
            changed = conn.execute(update(accounts).where(*Authenticator.as_checked(holder),
                                                          _same(accounts.c.seal_key_by_recovery, by_recovery))
                                   .values(password_hash=new_hash, password_changed_at=epoch_seconds(now),
                                           **values)).rowcount
            if not changed:
                raise self._refusal_after_change(conn, holder)
            resealed = reseal_packages(conn, account.id, username, holder.seal_key, public)
            revoke_activation_tokens(conn, account.id)
            self._audit.append(conn, now, "password.changed", actor, username, packages_resealed=resealed,
                               recovery_code_opens_keys=values["seal_key_by_recovery"] is not None)
            queue_email(conn, now, account.emails, "password_changed", holder_name=account.holder_name,
                        username=username, time=format_time(now))

    def replace_recovery_code(self, username: str, password: Secret, otp_code: str | None, otp_required: bool,
                              actor: str) -> str:
        """A new recovery code for a holder who gives the account's factors: a new seal key,
        locked under the password and sealed for the new code, to which every package is
        re-sealed, so the earlier code stops working, even against an older copy of the database
        (see signserver/accounts/seal_rotation.py). For a holder who lost the code (or never saw the one an unlock made), or who chose none at
        enrolment and wants one now. The password and packages stay as they are; the holder is
        e-mailed. Returns the code (show it to the holder once).

        The factors are checked as for Authorize, so a refusal never tells an unknown name from a
        wrong password.

        Raises:
            AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy: as
                Authenticator.authenticate; AccountDisabled and AuthenticationBusy also when the
                account was disabled, or its password, seal key or OTP changed, while they were
                checked (nothing was changed).
        """
        holder = self._authenticator.authenticate_holder(username, password, otp_code, otp_required, actor)
        account = holder.account
        new_code = new_recovery_code()
        recovery_hash, recovery_key = self._hasher.hash_with_key(normalise_recovery_code(new_code))
        private, public = holder_seal.new_seal_key()
        seal = seal_key_values(username, private, public, holder.password_key, recovery_key)
        now = self._clock.now()
        with self._database.transaction() as conn:
            # Only over the account as its factors were checked: a disable, reset or unlock
            # meanwhile wins.
            changed = conn.execute(update(accounts).where(*Authenticator.as_checked(holder))
                                   .values(recovery_code_hash=recovery_hash, **seal_columns(seal))).rowcount
            if not changed:
                raise self._refusal_after_change(conn, holder)
            resealed = reseal_packages(conn, account.id, username, holder.seal_key, public)
            self._audit.append(conn, now, "recovery_code.replaced", actor, username, packages_resealed=resealed)
            queue_email(conn, now, account.emails, "recovery_code_replaced", holder_name=account.holder_name,
                        username=username, time=format_time(now))
        return new_code

    @staticmethod
    def _refusal_after_change(conn: Connection, holder: Authenticated) -> SignServerError:
        """Why a write made only over the account as the holder's factors were checked
        (Authenticator.as_checked) found no such account: disabled, or changed, meanwhile."""
        return Authenticator.changed_since_checked(conn, holder) or AuthenticationBusy(
            "the account changed while its factors were checked; nothing was changed; try again")

    def unlock_with_recovery_code(self, username: str, recovery_code: Secret, new_password: Secret,
                                  operator: str) -> str:
        """An operator's unlock: the holder's recovery code clears the lock, sets a new password,
        and gives the account a new seal key, locked under it and sealed for a new recovery code,
        to which the holder's signing data packages are re-sealed (so the spent code opens nothing
        current, even against an older copy of the database: see
        signserver/accounts/seal_rotation.py).

        The code is single-use: a new one is returned (show it to the holder once).

        Raises:
            NotFound: no such account.
            AuthenticationFailed: the recovery code is not right, or the account has none, or it was
                used meanwhile (nothing changes).
            AuthenticationBusy: the account's password or seal key changed while the code was
                checked (nothing changes; the code is not spent).
            PasswordRejected: the new password breaks a rule.
        """
        check_password_rules(new_password.reveal(), username)
        with self._database.transaction() as conn:
            row = account_row(conn, username)
        if row is None:
            raise NotFound(f"no account {username!r}")
        now = self._clock.now()
        derived = self._hasher.derive(row.recovery_code_hash, normalise_recovery_code(recovery_code.reveal()))
        if not row.recovery_code_hash or not derived.matched:
            with self._database.transaction() as conn:
                self._audit.append(conn, now, "account.unlock_refused", operator, username)
            raise AuthenticationFailed("the recovery code is not right; nothing was changed")
        private = None
        if row.seal_key_by_recovery is not None and derived.key:
            private = open_seal_key(username, row.seal_key_by_recovery, derived.key, "recovery")
            if holder_seal.public_half(private) != row.seal_public_key:
                private = None  # a seal key the account no longer has: it opens no package of now
        new_code = new_recovery_code()
        password_hash, password_key = self._hasher.hash_with_key(new_password.reveal())
        recovery_hash, recovery_key = self._hasher.hash_with_key(normalise_recovery_code(new_code))
        # Lost: an account whose seal key was made after its recovery code (or replaced by a
        # password set without the old one, or changed while the code had its earlier form).
        lost = private is None
        _, seal = new_seal_key(username, password_key, recovery_key)
        values = {"password_hash": password_hash, "recovery_code_hash": recovery_hash,
                  "password_changed_at": epoch_seconds(now), **seal_columns(seal)}
        name_key = self._names.key_of(username)
        with self._database.transaction() as conn:
            # Single use: only the hash that was checked may be replaced. And only over the seal key
            # that was opened and the password it was locked under: a password set or changed
            # meanwhile (a renewal's activation, the holder's change) sealed packages to a seal key
            # this unlock would replace without re-sealing them.
            changed = conn.execute(update(accounts).where(
                accounts.c.id == row.id, accounts.c.recovery_code_hash == row.recovery_code_hash,
                accounts.c.password_hash == row.password_hash, _same(accounts.c.seal_public_key, row.seal_public_key),
                _same(accounts.c.seal_key_by_recovery, row.seal_key_by_recovery))
                .values(**values)).rowcount
            if not changed:
                now_hash = conn.execute(select(accounts.c.recovery_code_hash).where(accounts.c.id == row.id)).scalar()
                if now_hash != row.recovery_code_hash:
                    raise AuthenticationFailed("the recovery code was used meanwhile; nothing was changed")
                raise AuthenticationBusy("the account's password or seal key changed while the recovery code was "
                                         "checked; nothing was changed; try again")
            self._lockout.unlock(conn, name_key)
            revoke_activation_tokens(conn, row.id)
            disabled = disable_package_credentials(conn, row.id) if lost else 0
            resealed = 0 if lost else reseal_packages(conn, row.id, username, private, seal.public)
            self._audit.append(conn, now, "account.unlocked", operator, username, packages_lost=disabled,
                               packages_resealed=resealed)
            account = get_account(conn, username, now)
            LockNotices.queue_before_lifting(conn, account, name_key)
            queue_email(conn, now, account.emails, "account_unlocked", holder_name=account.holder_name,
                        username=username, time=format_time(now))
        return new_code

    def reset_password(self, username: str, new_password: Secret, operator: str) -> str:
        """An operator's reset for a holder who forgot the password and has no recovery code (or
        lost it): a new password and a new recovery code, and a new seal key, so the holder's
        signing data packages, sealed to the old one, can never sign again; their credentials are
        disabled. The RA then revokes their certificates and issues new ones, with new packages.

        Returns the new recovery code (show it to the holder once).

        Raises: NotFound, PasswordRejected.
        """
        check_password_rules(new_password.reveal(), username)
        now = self._clock.now()
        new_code = new_recovery_code()
        password_hash, password_key = self._hasher.hash_with_key(new_password.reveal())
        recovery_hash, recovery_key = self._hasher.hash_with_key(normalise_recovery_code(new_code))
        _, seal = new_seal_key(username, password_key, recovery_key)
        name_key = self._names.key_of(username)
        with self._database.transaction() as conn:
            account = get_account(conn, username, now)
            update_account(conn, account.id, password_hash=password_hash, recovery_code_hash=recovery_hash,
                           password_changed_at=epoch_seconds(now), **seal_columns(seal))
            self._lockout.unlock(conn, name_key)
            revoke_activation_tokens(conn, account.id)
            disabled = disable_package_credentials(conn, account.id)
            self._audit.append(conn, now, "account.password_reset", operator, username, packages_lost=disabled)
            LockNotices.queue_before_lifting(conn, account, name_key)
            queue_email(conn, now, account.emails, "password_reset", holder_name=account.holder_name,
                        username=username, time=format_time(now))
        return new_code

    def update_holder(self, username: str, operator: str, holder_name: str | None = None,
                      emails: tuple[str, ...] | None = None, organisation: str | None = None,
                      department: str | None = None, title: str | None = None, given_name: str | None = None,
                      surname: str | None = None) -> Account:
        """Change the holder's data (certificates issued later carry it; the username never changes).
        The given name and surname change together (both given, or both empty).

        Raises: NotFound, InvalidArgument.
        """
        values = {}
        if holder_name is not None:
            values["holder_name"] = check_text("the holder's name", holder_name, required=True,
                                               limit=MAX_SUBJECT_TEXT)
        if given_name is not None or surname is not None:
            values.update(holder_names(given_name or "", surname or ""))
        for name, value in (("organisation", organisation), ("department", department), ("title", title)):
            if value is not None:
                values[name] = check_text(name, value, limit=MAX_SUBJECT_TEXT)
        new_emails = check_emails(emails) if emails is not None else None
        now = self._clock.now()
        name_key = self._names.key_of(username)
        with self._database.transaction() as conn:
            account = get_account(conn, username, now)
            if values:
                update_account(conn, account.id, **values)
            if new_emails is not None:
                delete_account_emails(conn, account.id)
                conn.execute(insert(account_emails), [{"account_id": account.id, "position": i, "address": a}
                                                      for i, a in enumerate(new_emails)])
            self._audit.append(conn, now, "account.updated", operator, username,
                               fields=sorted([*values, *(["emails"] if new_emails is not None else [])]))
            return get_account(conn, username, now, name_key)

    def set_status(self, username: str, enabled: bool, operator: str) -> Account:
        """Disable (revoking activation tokens) or enable an account. Raises: NotFound."""
        now = self._clock.now()
        name_key = self._names.key_of(username)
        with self._database.transaction() as conn:
            account = get_account(conn, username, now)
            update_account(conn, account.id, status="active" if enabled else "disabled")
            if not enabled:
                revoke_activation_tokens(conn, account.id)
            self._audit.append(conn, now, "account.enabled" if enabled else "account.disabled", operator, username)
            return get_account(conn, username, now, name_key)

    def reset_otp(self, username: str, operator: str) -> str:
        """Give the account a new OTP seed; returns the new otpauth URI (show it once). Raises: NotFound."""
        seed = otp.new_seed()
        sealed = self._sealing.seal(seed.encode("ascii"), username.encode("utf-8"))
        now = self._clock.now()
        with self._database.transaction() as conn:
            account = get_account(conn, username, now)
            update_account(conn, account.id, otp_seed_sealed=sealed, otp_last_step=None)
            revoke_activation_tokens(conn, account.id)
            self._audit.append(conn, now, "otp.reset", operator, username)
        return otp.provisioning_uri(seed, username)

    def check_password(self, username: str, password: Secret, actor: str) -> Account:
        """Check the holder's password alone (no OTP), exactly as Authorize checks it: a wrong one
        counts toward the lockout, and the refusal never says more than Authorize's.

        Raises: AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy, as
            Authenticator.authenticate.
        """
        return self._authenticator.authenticate(username, password, None, False, actor)

    def authenticate(self, username: str, password: Secret, otp_code: str, actor: str) -> Account:
        """Check the holder's password and OTP (always required here) exactly as Authorize checks
        them, to sign the holder in somewhere else (the RA's pages): the OTP's time step is spent,
        a refusal counts toward the lockout and never says which factor was wrong.

        Raises: AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy,
            InvalidArgument, as Authenticator.authenticate.
        """
        return self._authenticator.authenticate(username, password, otp_code, True, actor)

    def set_password(self, username: str, new_password: Secret, operator: str) -> None:
        """Give the account a new password without the old one, for a holder whose account holds
        no valid certificate (the CA checks that): a new seal key under it, so the packages sealed
        to the old one can no longer sign and their credentials are disabled. The recovery code
        stays and still unlocks the account, but opens no key made from now on until the holder's
        next unlock gives a new code.

        Raises: NotFound, PasswordRejected.
        """
        prepared = self.prepare_password(username, new_password)
        with self._database.transaction() as conn:
            self.set_password_in(conn, username, prepared, operator)

    def prepare_password(self, username: str, new_password: Secret) -> NewPassword:
        """The slow half of :meth:`set_password`, outside any transaction: the rules checked, the
        password hashed and a new seal key made under it (seal a new package to its ``seal_public``).

        Raises: PasswordRejected.
        """
        check_password_rules(new_password.reveal(), username)
        password_hash, password_key = self._hasher.hash_with_key(new_password.reveal())
        _, seal = new_seal_key(username, password_key, None)
        return NewPassword(password_hash, seal)

    def set_password_in(self, conn: Connection, username: str, prepared: NewPassword, operator: str) -> None:
        """:meth:`set_password` in the caller's transaction, with what :meth:`prepare_password`
        made: the password and seal key replaced, activation tokens revoked, the package
        credentials of the old seal key disabled (a package inserted after this call is not), and
        the holder's e-mail queued.

        Raises: NotFound.
        """
        now = self._clock.now()
        account = get_account(conn, username, now)
        update_account(conn, account.id, password_hash=prepared.password_hash, password_changed_at=epoch_seconds(now),
                       **seal_columns(prepared.seal))
        revoke_activation_tokens(conn, account.id)
        disabled = disable_package_credentials(conn, account.id)
        self._audit.append(conn, now, "password.set", operator, username, packages_lost=disabled)
        queue_email(conn, now, account.emails, "password_changed", holder_name=account.holder_name,
                    username=username, time=format_time(now))

    def set_revocation_phrase(self, username: str, phrase: Secret, operator: str) -> None:
        """Replace the account's revocation phrase. Raises: NotFound, InvalidArgument (its rule)."""
        phrase_hash = self.prepare_revocation_phrase(phrase)
        with self._database.transaction() as conn:
            self.set_revocation_phrase_in(conn, username, phrase_hash, operator)

    def prepare_revocation_phrase(self, phrase: Secret) -> str:
        """The phrase checked against its rule and hashed (slow: outside any transaction).

        Raises: InvalidArgument (its rule).
        """
        check_revocation_phrase(phrase.reveal())
        return self._hasher.hash(phrase.reveal())

    def set_revocation_phrase_in(self, conn: Connection, username: str, phrase_hash: str, operator: str) -> None:
        """:meth:`set_revocation_phrase` in the caller's transaction, with the hash that
        :meth:`prepare_revocation_phrase` made. Raises: NotFound."""
        account = get_account(conn, username, self._clock.now())
        update_account(conn, account.id, revocation_phrase_hash=phrase_hash)
        self._audit.append(conn, self._clock.now(), "revocation_phrase.set", operator, username)

    def check_revocation_phrase(self, username: str, phrase: Secret) -> bool:
        """True when ``phrase`` is the account's revocation phrase (used by the CA). Raises: NotFound."""
        with self._database.transaction() as conn:
            row = account_row(conn, username)
        if row is None:
            raise NotFound(f"no account {username!r}")
        return bool(row.revocation_phrase_hash) and self._hasher.verify(row.revocation_phrase_hash, phrase.reveal())


def _same(column, value):
    """``column`` holds ``value`` (NULL too)."""
    return column.is_(None) if value is None else column == value


def disable_package_credentials(conn: Connection, account_id: int) -> int:
    """Disable the account's active package credentials (sealed to a seal key it no longer has);
    returns how many."""
    return conn.execute(update(credentials).where(credentials.c.account_id == account_id,
                                                  credentials.c.key_store == PACKAGE,
                                                  credentials.c.status == "active")
                        .values(status="disabled")).rowcount


def revoke_activation_tokens(conn: Connection, account_id: int) -> None:
    """Revoke every outstanding activation token of the account, erasing the keys sealed to them."""
    conn.execute(update(activation_tokens).where(activation_tokens.c.account_id == account_id,
                                                 activation_tokens.c.revoked.is_(False))
                 .values(revoked=True, sealed_key=None))
