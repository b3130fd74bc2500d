"""`signserver account`, `signserver app` and `signserver audit` as an operator runs them."""

from __future__ import annotations

import json
import uuid

import pytest

from signserver.accounts.model import AccountStatus
from signserver.errors import AuthenticationFailed
from signserver.secret import Secret
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env

PASSWORD = "Cli-pass-2026"


def run(state_dir, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], env=cli_env(state_dir, **env), capture_output=True,
                              text=True, timeout=120)


@pytest.fixture
def created(state_dir, tmp_path):
    name = f"cli{uuid.uuid4().hex[:8]}"
    png = tmp_path / "otp.png"
    result = run(state_dir, "account", "create", name, "--name", "陳大文 Chan Tai Man", "--email", f"{name}@example.mo",
                 "--kind", "corporate", "--organisation", "Example Lda", "--key-algorithm", "ec-p256",
                 "--qr-png", str(png), SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes().startswith(b"\x89PNG")
    return name, result.stdout


def test_create_prints_the_one_time_material(created):
    name, out = created
    assert "Recovery code" in out and f"otpauth://totp/signserver:{name}?secret=" in out
    assert "▀" in out or "█" in out  # the terminal QR code
    assert PASSWORD not in out


def test_list_and_show(state_dir, created):
    name, _ = created
    accounts = json.loads(run(state_dir, "account", "list", "--json").stdout)
    mine = next(a for a in accounts if a["username"] == name)
    assert mine["holder_name"] == "陳大文 Chan Tai Man" and mine["kind"] == "corporate"
    shown = run(state_dir, "account", "show", name)
    assert shown.returncode == 0 and "Example Lda" in shown.stdout and "ec-p256" in shown.stdout
    missing = run(state_dir, "account", "show", "nobody-here")
    assert missing.returncode == 1 and "no account 'nobody-here'" in missing.stderr


def test_unlock_with_the_recovery_code(state_dir, created, service):
    name, out = created
    code = out.split("shown once): ")[1].split()[0]
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            service.accounts._authenticator.authenticate(name, Secret("Wrong-pass-1"), None, False, "test")
    assert service.accounts.get(name).status is AccountStatus.LOCKED
    wrong = run(state_dir, "account", "unlock", name, SIGNSERVER_ACCOUNT_RECOVERY_CODE="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
                SIGNSERVER_ACCOUNT_PASSWORD="Unlocked-pass-1")
    assert wrong.returncode == 1 and "recovery code is not right" in wrong.stderr
    unlocked = run(state_dir, "account", "unlock", name, "--json", SIGNSERVER_ACCOUNT_RECOVERY_CODE=code,
                   SIGNSERVER_ACCOUNT_PASSWORD="Unlocked-pass-1")
    assert unlocked.returncode == 0, unlocked.stderr
    assert json.loads(unlocked.stdout)["recovery_code"] != code
    assert service.accounts.get(name).status is AccountStatus.ACTIVE
    service.accounts._authenticator.authenticate(name, Secret("Unlocked-pass-1"), None, False, "test")


def test_disable_enable_and_reset_otp(state_dir, created):
    name, _ = created
    assert "disabled" in run(state_dir, "account", "disable", name).stdout
    assert "active" in run(state_dir, "account", "enable", name).stdout
    reset = json.loads(run(state_dir, "account", "reset-otp", name, "--json").stdout)
    assert reset["otp_uri"].startswith(f"otpauth://totp/signserver:{name}")


def test_bad_account_input(state_dir):
    result = run(state_dir, "account", "create", "x", "--name", "X", "--email", "x@example.mo",
                 SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert result.returncode == 1 and "account name" in result.stderr
    weak = run(state_dir, "account", "create", "weakling", "--name", "X", "--email", "x@example.mo",
               SIGNSERVER_ACCOUNT_PASSWORD="password1")
    assert weak.returncode == 1 and "most common" in weak.stderr


def test_app_create_and_list(state_dir, created):
    name, _ = created
    app_name = f"app-{uuid.uuid4().hex[:6]}"
    made = json.loads(run(state_dir, "app", "create", app_name, "--account", name, "--no-otp", "--json").stdout)
    assert made["api_key"].startswith("ssk_") and made["application"]["accounts"] == [name]
    listed = run(state_dir, "app", "list")
    assert app_name in listed.stdout and "not required" in listed.stdout
    assert made["api_key"] not in listed.stdout


def test_audit_verify_on_the_shared_log(state_dir, created):
    # Other tests write to this log with no server sealing it: left unsealed for minutes, their
    # records would be reported, as seals removed would be.
    sealed = run(state_dir, "audit", "seal", "--json")
    assert sealed.returncode == 0 and isinstance(json.loads(sealed.stdout)["sealed_seq"], int), sealed.stdout
    result = run(state_dir, "audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["intact"] and report["records"] >= 2


def test_create_without_a_recovery_code_then_reset_the_password(state_dir, service):
    name = f"cli{uuid.uuid4().hex[:8]}"
    made = run(state_dir, "account", "create", name, "--name", "Lei Ka Io", "--email", f"{name}@example.mo",
               "--key-algorithm", "ec-p256", "--no-recovery-code", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert made.returncode == 0, made.stderr
    assert "No recovery code" in made.stdout and "Recovery code (" not in made.stdout
    refused = run(state_dir, "account", "unlock", name,
                  SIGNSERVER_ACCOUNT_RECOVERY_CODE="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
                  SIGNSERVER_ACCOUNT_PASSWORD="Unlocked-pass-1")
    assert refused.returncode == 1 and "recovery code is not right" in refused.stderr

    reset = run(state_dir, "account", "reset-password", name, "--yes", SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2026")
    assert reset.returncode == 0, reset.stderr
    assert "Warning" in reset.stdout and "never sign" in reset.stdout and "revoke" in reset.stdout
    code = reset.stdout.split("shown once): ")[1].split()[0]
    assert "Reset-pass-2026" not in reset.stdout
    service.accounts._authenticator.authenticate(name, Secret("Reset-pass-2026"), None, False, "test")
    shown = json.loads(run(state_dir, "account", "show", name, "--json").stdout)
    assert [c["status"] for c in shown["credentials"]] == ["disabled"]
    # The recovery code it printed unlocks the account.
    unlocked = run(state_dir, "account", "unlock", name, "--json", SIGNSERVER_ACCOUNT_RECOVERY_CODE=code,
                   SIGNSERVER_ACCOUNT_PASSWORD="Unlocked-pass-2")
    assert unlocked.returncode == 0, unlocked.stderr


def test_reset_password_json_and_unknown_account(state_dir):
    name = f"cli{uuid.uuid4().hex[:8]}"
    made = run(state_dir, "account", "create", name, "--name", "Lei Ka Io", "--email", f"{name}@example.mo",
               "--key-algorithm", "ec-p256", "--json", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert made.returncode == 0 and json.loads(made.stdout)["recovery_code"]
    reset = run(state_dir, "account", "reset-password", name, "--yes", "--json", SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2027")
    assert reset.returncode == 0, reset.stderr
    answer = json.loads(reset.stdout)
    assert answer["account"] == name and answer["recovery_code"] and "revoke" in answer["warning"]
    missing = run(state_dir, "account", "reset-password", "nobody-here", "--yes", SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2028")
    assert missing.returncode == 1 and "no account 'nobody-here'" in missing.stderr
    weak = run(state_dir, "account", "reset-password", name, "--yes", SIGNSERVER_ACCOUNT_PASSWORD="password1")
    assert weak.returncode == 1 and "most common" in weak.stderr
