"""`signserver ra serve --demo`: what a person needs to try the RA's pages beside the core's
demonstration (`signserver serve --demo`, which makes the holder ``demo.holder`` with a
cloud-signature certificate and keeps its password and OTP seed in STATE_DIR/demo).

Made once and kept, so that every later start finds it again:
- the demo holder registered with the RA, its identity data as the reference registry's sample
  identity holds them (signserver/registry_dev/fixtures/registry.toml), so that the registry step
  matches, and the sample's reference photo for the photo step;
- an operator account, ``demo.operator``, its password and OTP seed in STATE_DIR/demo
  (operator-password, operator-otp-seed; mode 0600, a file there before replaced whatever its mode);
- the demo holder's renewal, opened and confirmed by that operator, so that it appears in the
  holder's lists. The core may still be starting: a background thread asks it until it answers,
  and the pages are served meanwhile.

A development set-up, not how holders and operators are enrolled.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import sys
import threading
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, urlparse

import pyotp

from signserver.files import write_private
from signserver.ra.errors import OperatorAccountRefused, RaError, SettingsError
from signserver.ra.operator_accounts import OTP_ISSUER
from signserver.ra.renewal import Holder, State, is_cloud_signature
from signserver.ra.store import repository

log = logging.getLogger(__name__)

# The core's demonstration holder (signserver/demo.py): its account and the address on its certificate.
DEMO_ACCOUNT = "demo.holder"
DEMO_EMAILS = ("demo.holder@example.mo",)
# Registered as the reference registry's first sample identity holds it (a valid Macau resident
# identity card), so that the registry's data match the registered data.
DEMO_HOLDER = Holder(DEMO_ACCOUNT, "BIR", "1234567(8)", "KUAN WENG SAM LUZIA", datetime.date(1985, 3, 14),
                     DEMO_EMAILS)
# That identity's reference photo: as the selfie of the photo step, the face service matches it.
DEMO_SELFIE = Path(__file__).resolve().parents[1] / "registry_dev" / "fixtures" / "photos" / "kuan-weng-sam.png"
DEMO_OPERATOR = "demo.operator"
OPERATOR_PASSWORD_FILE = "operator-password"
OPERATOR_OTP_SEED_FILE = "operator-otp-seed"
SET_UP_BY = "ra:demo"  # the actor of the demo's changes in the RA's audit trail
RETRY_SECONDS = 2.0  # how often the core is asked while it starts


def prepare_demo(settings, database, workflow, operations, operators, *, stopping: threading.Event,
                 out: TextIO | None = None) -> "DemoRenewal":
    """Register the demo holder and make the demo operator (both once), print what a person needs,
    and start the thread that opens and confirms the demo holder's renewal once the core answers.

    ``database``: the RA's RaDatabase; ``workflow``: its RenewalWorkflow; ``operations``: its
    RaOperations (the core's certificates); ``operators``: its OperatorAccounts; ``stopping``: set
    when the RA stops (the thread stops asking).

    Raises: StoreUnavailable; SettingsError: the demo's folder cannot be written.
    """
    out = out or sys.stdout
    folder = settings.state_dir / "demo"
    register_demo_holder(database, workflow)
    try:
        operator_uri = ensure_demo_operator(operators, folder)
    except OSError as exc:
        raise SettingsError(f"the demo's folder {folder}: {exc.strerror or exc}") from None
    _print_summary(out, settings, folder, operator_uri)
    opener = DemoRenewal(workflow, operations, stopping, out)
    opener.start()
    return opener


def register_demo_holder(database, workflow) -> bool:
    """Register the demo holder unless it is registered with these data already; True when it was.

    Raises: StoreUnavailable."""
    with database.transaction() as conn:
        if repository.find_holder(conn, DEMO_ACCOUNT) == DEMO_HOLDER:
            return False
    workflow.register_holder(DEMO_HOLDER, SET_UP_BY)
    return True


def ensure_demo_operator(operators, folder: Path) -> str:
    """The demo operator's otpauth:// URI; the account is made (or, when its files are gone, given
    a new password and OTP seed) and its password and seed written to ``folder`` (0600). "" when
    the account was disabled (it stays so) or cannot be made (ra.operators names others only).

    Raises: StoreUnavailable; OSError: the files cannot be written.
    """
    password_file, seed_file = folder / OPERATOR_PASSWORD_FILE, folder / OPERATOR_OTP_SEED_FILE
    account = next((a for a in operators.list() if a.name == DEMO_OPERATOR), None)
    if account is not None and account.disabled_at is not None:
        log.warning("the demo operator %s is disabled: sign in as another operator", DEMO_OPERATOR)
        return ""
    if account is not None and password_file.exists() and seed_file.exists():
        seed = seed_file.read_text(encoding="ascii").strip()
        return pyotp.TOTP(seed).provisioning_uri(name=DEMO_OPERATOR, issuer_name=OTP_ISSUER)
    password = f"Demo-{secrets.token_urlsafe(12)}"
    try:
        if account is None:
            uri = operators.add(DEMO_OPERATOR, password, SET_UP_BY)
        else:  # its files were removed: the password and seed they held are not known any more
            uri = operators.reset_password(DEMO_OPERATOR, password, SET_UP_BY)
    except OperatorAccountRefused as exc:  # e.g. ra.operators names others only: the demo goes on without
        log.warning("no demo operator: %s", exc)
        return ""
    _write_private(password_file, password)
    _write_private(seed_file, parse_qs(urlparse(uri).query)["secret"][0])
    return uri


def _write_private(path: Path, text: str) -> None:
    """``text`` and a newline in ``path``: a new file of mode 0600 that takes the place of any
    there before (its folder 0700 when it has to be made). Opening the file there with mode 0600
    would leave one already there, readable by others, as it was while it took the secret.

    Raises: OSError: the folder cannot be made or written.
    """
    write_private(path, (text + "\n").encode("ascii"))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (shorter to type)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _otp_command(seed_file: Path) -> str:
    return (f".venv/bin/python -c 'import pyotp; "
            f"print(pyotp.TOTP(open(\"{_shown(seed_file)}\").read().strip()).now())'")


def _print_summary(out: TextIO, settings, folder: Path, operator_uri: str) -> None:
    lines = [
        "",
        f"Demo: the RA's pages are at {settings.public_url}/",
        f"  holder {DEMO_ACCOUNT}: password in {_shown(folder / 'password')}; its current one-time password:",
        f"    {_otp_command(folder / 'otp-seed')}",
        f"  the photo step's selfie: {_shown(DEMO_SELFIE)}",
        f"  e-mail (codes, notices) goes to {settings.smtp_host}:{settings.smtp_port}",
    ]
    if operator_uri:
        lines += [
            f"  operator {DEMO_OPERATOR}: password in {_shown(folder / OPERATOR_PASSWORD_FILE)}; "
            "its current one-time password:",
            f"    {_otp_command(folder / OPERATOR_OTP_SEED_FILE)}",
            f"    (OTP URI for an authenticator app: {operator_uri})",
        ]
    print("\n".join(lines) + "\n", file=out, flush=True)


class DemoRenewal(threading.Thread):
    """Opens and confirms the demo holder's renewal as the demo operator, once: asks the core
    every RETRY_SECONDS until it answers and has the demo holder's cloud-signature certificate.
    A renewal of the holder past its confirmation (under way or finished) is left as it is."""

    def __init__(self, workflow, operations, stopping: threading.Event, out: TextIO | None = None):
        super().__init__(name="ra-demo", daemon=True)
        self._workflow = workflow
        self._operations = operations
        self._stopping = stopping
        self._out = out or sys.stdout
        self.renewal = None  # the renewal confirmed or found, once done

    def run(self) -> None:
        waiting_logged = False
        while not self._stopping.is_set():
            try:
                if self.open_once():
                    return
            except RaError as exc:  # the core is starting, or has not made the demo holder yet
                if not waiting_logged:
                    log.info("demo: the core is not ready yet; the demo holder's renewal is opened once it is")
                    waiting_logged = True
                log.debug("demo: the core is not ready: %s", exc)
            except Exception:  # keep trying: the pages are served whatever happens here
                log.exception("demo: opening the demo holder's renewal failed")
            self._stopping.wait(RETRY_SECONDS)

    def open_once(self) -> bool:
        """Open and confirm the renewal unless there is one already; False when the core has no
        valid cloud-signature certificate of the demo holder yet.

        Raises: CoreUnavailable, OperationRefused (the core has no demo holder yet), StepRefused,
        StoreUnavailable.
        """
        renewals = self._workflow.renewals(account=DEMO_ACCOUNT)
        under_way = [r for r in renewals if r.state is not State.AWAITING_CONFIRMATION]
        if under_way:
            self.renewal = under_way[-1]
            more = (f"; {DEMO_OPERATOR} may confirm another on the operators' pages" if self.renewal.final else "")
            print(f"Demo: {DEMO_ACCOUNT}'s renewal of {self.renewal.serial} is {self.renewal.state.value}{more}.",
                  file=self._out, flush=True)
            return True
        if renewals:  # opened, not confirmed yet (a stop between the two)
            serial = renewals[0].serial
        else:
            valid = [c for c in self._operations.certificates(DEMO_ACCOUNT, status="valid")
                     if is_cloud_signature(c.profile)]
            if not valid:
                return False
            serial = max(valid, key=lambda c: c.not_after).serial
        self.renewal = self._workflow.confirm_renewal(serial, DEMO_OPERATOR)
        told = ("its notice e-mail is sent; sign in as " + DEMO_ACCOUNT + " to go through it"
                if self.renewal.state is not State.CONFIRMED else
                "the notice goes out ra.notice_days before the certificate expires (make run sets "
                "SIGNSERVER_RA_NOTICE_DAYS so that it goes out at once)")
        print(f"Demo: {DEMO_OPERATOR} confirmed the renewal of {DEMO_ACCOUNT}'s certificate {serial}: {told}.",
              file=self._out, flush=True)
        return True
