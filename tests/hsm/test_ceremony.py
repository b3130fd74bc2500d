"""The key ceremony between two tokens, through the command line: the master key and the OTP
sealing key copied wrapped under the destination's transport key, checked by their check values,
and used there to open a holder's OTP seed and sign with a package made on the source."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pkcs11.exceptions as p11
import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from signserver.accounts import otp
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.array_attributes import ArrayAttributeMapper
from signserver.hsm.ceremony import (TRANSPORT_LABEL_PREFIX, TRUSTED_LABEL, WRAP_MECHANISM, WRAP_PARAMETER,
                                      WrappedKeys, check_values_text)
from signserver.hsm.master_keys import master_label
from signserver.hsm.sealing import SEALING_LABEL, SealingKey
from signserver.secret import Secret
from signserver.service import SignService
from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, enrol, production_environ, requires_softhsm
from tests.hsm.test_keystore import verify

pytestmark = [requires_softhsm("one soft token per system, and the ceremony needs a source and a destination "
                               "token (and AES_KEY_WRAP_PAD)"),
              pytest.mark.sqlite_only]  # copies the source's database file to the destination

ECDSA = SignatureAlgorithm.ECDSA_SHA256
SOURCE_SO, SOURCE_USER = "so-pin-of-the-source", "user-pin-of-the-source"
DESTINATION_SO, DESTINATION_USER = "so-pin-of-the-destination", "user-pin-of-the-destination"


def init_token(label: str, so_pin: str, user_pin: str) -> None:
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin,
                    "--pin", user_pin], check=True, capture_output=True)


@pytest.fixture
def tokens(state_dir):
    """A source and a destination token, in the test run's SoftHSM (SOFTHSM2_CONF is set)."""
    suffix = uuid.uuid4().hex[:8]
    source, destination = f"source-{suffix}", f"destination-{suffix}"
    init_token(source, SOURCE_SO, SOURCE_USER)
    init_token(destination, DESTINATION_SO, DESTINATION_USER)
    # The tokens stay (in the test run's token directory): deleting a token under this process's
    # loaded SoftHSM leaves the module's view of its slots stale, and other tokens' key generation
    # then fails with CKR_GENERAL_ERROR.
    return source, destination


def service_on(config, state: Path, token: str, pin: str, clock) -> SignService:
    state.mkdir(parents=True, exist_ok=True)
    own = replace(config, state_dir=state, database_url=f"sqlite:///{state / 'signserver.db'}",
                  hsm=replace(config.hsm, token_label=token))
    service = SignService.from_config(own, user_pin=Secret(pin), clock=clock)
    service.prepare_database()
    return service


class Cli:
    def __init__(self, state_dir: Path, own_state: Path, **extra: str):
        self.env = {**cli_env(state_dir, **extra), "SIGNSERVER_STATE_DIR": str(own_state)}

    def __call__(self, token: str, user_pin: str, *args: str, so_pin: str | None = None):
        env = {**self.env, "SIGNSERVER_HSM_USER_PIN": user_pin}
        if so_pin is not None:
            env["SIGNSERVER_HSM_SO_PIN"] = so_pin
        return cli_forkserver.run([str(SIGNSERVER), "hsm", "master", *args, "--token", token], env=env,
                                  capture_output=True, text=True, timeout=120)


def copy_database(source: Path, destination: Path) -> None:
    """A consistent copy (what the write-ahead log holds included)."""
    with sqlite3.connect(source) as original, sqlite3.connect(destination) as copy:
        original.backup(copy)


def objects(service: SignService, template: dict) -> list[str]:
    session = service.keys.session
    return session.run(lambda s: [str(o[Attribute.LABEL]) for o in session.find(s, template)], "look")


def sign_once(service: SignService, holder, clock, text: str, otp_required: bool = True) -> None:
    created, seed = holder
    app, _ = service.applications.create(f"app-{uuid.uuid4().hex[:6]}", otp_required=otp_required)
    clock.advance(seconds=30)
    digest = hashlib.sha256(text.encode()).digest()
    code = otp.code_at(seed, clock.now()) if otp_required else None
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD), code,
                                     created.credential.id, HashAlgorithm.SHA256, [digest])
    [signature] = service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, [digest])
    verify(load_der_public_key(service.packages.public_key_der(created.credential.key_id)), signature, ECDSA,
           text.encode())


def test_the_ceremony_copies_the_master_key_and_the_destination_signs_with_the_source_packages(
        config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    info = source.packages.ensure_master()  # the source's first start
    holder = enrol(source)
    sign_once(source, holder, clock, "signed at the source")
    sealing = SealingKey(source.keys.session).describe()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    label = master_label(1)

    begun = cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport), "--json")
    assert begun.returncode == 0, begun.stderr
    assert json.loads(begun.stdout)["transport_key"] == f"{TRANSPORT_LABEL_PREFIX}1"
    assert b"BEGIN PUBLIC KEY" in transport.read_bytes()

    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out",
                   str(wrapped_file), "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    printed = json.loads(exported.stdout)
    assert [(k["label"], k["kind"]) for k in printed["keys"]] == [(label, "master"), (SEALING_LABEL, "sealing")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", k["check_value"]) for k in printed["keys"])
    assert printed["check_values"] == ",".join(f"{k['label']}={k['check_value']}" for k in printed["keys"])
    source.keys.session.close()  # see the token as it is now
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []

    wrong = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file),
                "--check-value", f"{label}={'0' * 32},{SEALING_LABEL}={printed['keys'][1]['check_value']}")
    assert wrong.returncode == 1
    assert "not the source's master key" in wrong.stderr
    incomplete = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file),
                     "--check-value", info.check_value)
    assert incomplete.returncode == 1 and SEALING_LABEL in incomplete.stderr

    imported = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file),
                   "--check-value", printed["check_values"], "--json")
    assert imported.returncode == 0, imported.stderr
    assert [(k["label"], k["stored"]) for k in json.loads(imported.stdout)["keys"]] == [
        (label, True), (SEALING_LABEL, True)]

    # The destination, with a copy of the database, opens the package made on the source and signs.
    (tmp_path / "destination").mkdir()
    copy_database(tmp_path / "source" / "signserver.db", tmp_path / "destination" / "signserver.db")
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    assert destination.packages.ensure_master() == info  # what a server checks on every start
    assert objects(destination, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) == []  # the transport key is gone
    # The holder's OTP seed, sealed on the source, opens on the destination.
    sign_once(destination, holder, clock, "signed at the destination", otp_required=True)
    assert SealingKey(destination.keys.session).describe() == sealing
    status = cli(destination_token, DESTINATION_USER, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert [(m["label"], m["on_token"]) for m in json.loads(status.stdout)] == [(label, "yes")]


def test_a_wrong_check_value_is_refused_and_nothing_is_imported(config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "master.wrapped"
    label = master_label(1)
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    assert cli(source_token, SOURCE_USER, "export", label, "--transport", str(transport), "--out", str(wrapped_file),
               so_pin=SOURCE_SO).returncode == 0

    refused = cli(destination_token, DESTINATION_USER, "import", label, "--in", str(wrapped_file),
                  "--check-value", "abcdef" * 5 + "ab")

    assert refused.returncode == 1 and "nothing was imported" in refused.stderr
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    assert not destination.master_keys.present(label)
    assert objects(destination, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) == [f"{TRANSPORT_LABEL_PREFIX}1"]


def test_the_exported_file_does_not_open_without_the_transport_key(config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    info = source.packages.ensure_master()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "master.wrapped"
    label = master_label(1)
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", label, "--transport", str(transport), "--out",
                   str(wrapped_file), "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    check_values = json.loads(exported.stdout)["check_values"]
    assert cli(destination_token, DESTINATION_USER, "import", label, "--in", str(wrapped_file), "--check-value",
               check_values).returncode == 0
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    destination.master_keys.destroy(label)  # as on a token that never received it

    again = cli(destination_token, DESTINATION_USER, "import", label, "--in", str(wrapped_file),
                "--check-value", check_values)

    assert again.returncode == 1
    assert "holds no transport key for this file" in again.stderr
    destination.keys.session.close()
    assert not destination.master_keys.present(label)


def test_export_needs_the_so_pin(config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    cli = Cli(state_dir, tmp_path / "source")
    transport = tmp_path / "transport.pem"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0

    refused = cli(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(transport), "--out",
                  str(tmp_path / "master.wrapped"), so_pin="not-the-so-pin")

    assert refused.returncode == 1, refused.stderr
    assert "not-the-so-pin" not in refused.stderr
    assert not (tmp_path / "master.wrapped").exists()
    source.keys.session.close()
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []


def legacy_sealing_key(service: SignService) -> None:
    """The sealing key as versions before the ceremony copied it made it: not extractable."""
    session = service.keys.session
    session.run(lambda s: s.generate_key(
        KeyType.AES, 256, label=SEALING_LABEL, id=uuid.uuid4().bytes, store=True,
        template={Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                  Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                  Attribute.WRAP: False, Attribute.UNWRAP: False}), "make a legacy sealing key")


def test_a_sealing_key_made_before_it_could_be_copied_is_refused_with_what_to_do(
        config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    legacy_sealing_key(source)
    info = source.packages.ensure_master()
    holder = enrol(source)
    sign_once(source, holder, clock, "the legacy key keeps working on its token")
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0

    refused = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out", str(wrapped_file),
                  so_pin=SOURCE_SO)

    assert refused.returncode == 1, refused.stderr
    assert f"the sealing key '{SEALING_LABEL}' on this token was made before sealing keys could be copied" \
        in refused.stderr
    assert "export signserver-master-N" in refused.stderr and "reset-otp" in refused.stderr
    assert not wrapped_file.exists()
    source.keys.session.close()
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []
    # The master key alone still copies.
    alone = cli(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(transport), "--out",
                str(wrapped_file), "--json", so_pin=SOURCE_SO)
    assert alone.returncode == 0, alone.stderr
    assert re.fullmatch(rf"{master_label(1)}=[0-9a-f]{{32}}", json.loads(alone.stdout)["check_values"])


def test_an_import_over_another_sealing_key_is_refused_and_nothing_is_imported(
        config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    SealingKey(destination.keys.session).describe()  # its server started before the ceremony, and sealed
    destination.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out", str(wrapped_file),
                   "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr

    refused = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                  json.loads(exported.stdout)["check_values"])

    assert refused.returncode == 1, refused.stderr
    assert f"already holds another key labelled '{SEALING_LABEL}'" in refused.stderr
    assert "start the destination's server only after the key ceremony" in refused.stderr
    assert not destination.master_keys.present(master_label(1))
    assert objects(destination, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) == [f"{TRANSPORT_LABEL_PREFIX}1"]


def test_a_later_ceremony_adds_a_prepared_master_key_and_leaves_the_keys_already_held(
        config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    cli = Cli(state_dir, tmp_path / "source")

    def ceremony(name: str) -> list[tuple[str, bool]]:
        transport, wrapped_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.wrapped"
        assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
        exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out",
                       str(wrapped_file), "--json", so_pin=SOURCE_SO)
        assert exported.returncode == 0, exported.stderr
        imported = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                       json.loads(exported.stdout)["check_values"], "--json")
        assert imported.returncode == 0, imported.stderr
        return [(k["label"], k["stored"]) for k in json.loads(imported.stdout)["keys"]]

    assert ceremony("first") == [(master_label(1), True), (SEALING_LABEL, True)]
    prepared = source.master_rotation.rotate("operator:test", activate=False)

    assert ceremony("second") == [(master_label(1), False), (prepared, True), (SEALING_LABEL, False)]
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    assert destination.master_keys.describe(prepared) == source.master_keys.describe(prepared)


def test_status_on_a_destination_before_the_ceremony_makes_no_master_key(config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    info = source.packages.ensure_master()
    source_cli, destination_cli = Cli(state_dir, tmp_path / "source"), Cli(state_dir, tmp_path / "destination")

    # The destination's own database, before its server first starts: nothing to list.
    empty = destination_cli(destination_token, DESTINATION_USER, "status", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == []
    # A database shared with the source: the active key is listed, and not on this token.
    (tmp_path / "shared").mkdir()
    copy_database(tmp_path / "source" / "signserver.db", tmp_path / "shared" / "signserver.db")
    shared = Cli(state_dir, tmp_path / "shared")(destination_token, DESTINATION_USER, "status", "--json")
    assert shared.returncode == 0, shared.stderr
    assert [(m["label"], m["state"], m["on_token"]) for m in json.loads(shared.stdout)] == [
        (master_label(1), "active", "no")]

    # The ceremony then goes through: the destination holds no key of its own under the label.
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert destination_cli(destination_token, DESTINATION_USER, "receive-begin", "--out",
                           str(transport)).returncode == 0
    exported = source_cli(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(transport),
                          "--out", str(wrapped_file), "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    imported = destination_cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file),
                               "--check-value", json.loads(exported.stdout)["check_values"])
    assert imported.returncode == 0, imported.stderr


def test_an_export_destroys_the_trusted_key_an_export_that_stopped_left(config, state_dir, tokens, tmp_path, clock):
    from signserver.hsm import ceremony

    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    info = source.packages.ensure_master()
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    for transport in (first, second):
        assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    # An export stopped (Ctrl-C, a crash) once the security officer had marked its transport key trusted.
    ceremony.trust_transport_key(config.hsm.module, source_token, Secret(SOURCE_SO), first.read_bytes(),
                                 config.hsm.transport_key_bits)
    assert len(objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True})) == 1
    source.keys.session.close()

    exported = cli(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(second), "--out",
                   str(tmp_path / "keys.wrapped"), "--json", so_pin=SOURCE_SO)

    assert exported.returncode == 0, exported.stderr
    assert re.fullmatch(rf"{master_label(1)}=[0-9a-f]{{32}}", json.loads(exported.stdout)["check_values"])
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []


def test_the_check_values_authenticate_the_file_and_short_ones_are_refused(config, state_dir, tokens, tmp_path, clock):
    """A 3-byte check value is matched by one AES key in 2**24, which a laptop finds in a minute:
    whoever alters the file on its way could wrap a key of their own under the (public) transport
    key with the check value the destination expects. The ceremony's check values are whole blocks."""
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    info = source.packages.ensure_master()
    sealing = SealingKey(source.keys.session).describe()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out", str(wrapped_file),
                   "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    printed = {k["label"]: k["check_value"] for k in json.loads(exported.stdout)["keys"]}
    assert all(len(value) == 32 for value in printed.values())
    # None is the key's encryption of a zero block (the usual check value is its start): for the
    # sealing key, an AES-GCM key, that block is the authentication subkey, which must not leave.
    assert not printed[master_label(1)].startswith(info.check_value)
    zeros = source.keys.session.run(lambda s: bytes(SealingKey(source.keys.session).handle(s).encrypt(
        bytes(16), mechanism=Mechanism.AES_ECB)).hex(), "encrypt a zero block")
    assert zeros.startswith(sealing.check_value) and printed[SEALING_LABEL] != zeros

    short = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                f"{master_label(1)}={info.check_value},{SEALING_LABEL}={sealing.check_value}")

    assert short.returncode == 1 and "Traceback" not in short.stderr
    assert "32 hexadecimal digits" in short.stderr
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    assert not destination.master_keys.present(master_label(1))
    destination.keys.session.close()
    imported = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                   json.loads(exported.stdout)["check_values"])
    assert imported.returncode == 0, imported.stderr
    assert destination.master_keys.describe(master_label(1)) == info  # its CKA_CHECK_VALUE, as servers read it


def exported_file(config, state_dir, tokens, tmp_path, clock) -> WrappedKeys:
    """A destination that ran receive-begin, and the source's export of its master and sealing keys."""
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out", str(wrapped_file),
                   "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    return WrappedKeys.from_bytes(wrapped_file.read_bytes())


def transport_private_key(session, s):
    [private] = session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                 Attribute.LABEL: f"{TRANSPORT_LABEL_PREFIX}1"})
    return private


def test_the_transport_key_unwraps_the_file_only_into_sensitive_keys(config, state_dir, tokens, tmp_path, clock):
    """Whoever holds the destination's user PIN and the file cannot ask the transport key for a
    copy of a shared key they could read."""
    wrapped = exported_file(config, state_dir, tokens, tmp_path, clock)
    destination = service_on(config, tmp_path / "destination", tokens[1], DESTINATION_USER, clock)
    session = destination.keys.session

    def unwrap_readable(s) -> list[str]:
        private, outcomes = transport_private_key(session, s), []
        for key in wrapped.keys:
            try:
                copy = private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, key.wrapped, mechanism=WRAP_MECHANISM,
                                          mechanism_param=WRAP_PARAMETER, store=False,
                                          template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
            except p11.PKCS11Error as exc:
                outcomes.append(type(exc).__name__)
                continue
            try:
                outcomes.append(f"read in clear: {bytes(copy[Attribute.VALUE]).hex()}")
            finally:
                copy.destroy()
        return outcomes

    assert session.run(unwrap_readable, "unwrap the file's keys readable") == ["TemplateInconsistent"] * 2
    session.close()
    imported = Cli(state_dir, tmp_path / "source")(tokens[1], DESTINATION_USER, "import", "--in",
                                                   str(tmp_path / "keys.wrapped"), "--check-value",
                                                   check_values_text(wrapped.keys))
    assert imported.returncode == 0, imported.stderr


def test_the_transport_private_key_cannot_be_changed_to_decrypt_the_file(config, state_dir, tokens, tmp_path, clock):
    """Its attributes are fixed when it is made: allowed to decrypt (or sign, a raw RSA
    decryption), or given another unwrap template, it would open the file's keys in clear."""
    wrapped = exported_file(config, state_dir, tokens, tmp_path, clock)
    destination = service_on(config, tmp_path / "destination", tokens[1], DESTINATION_USER, clock)
    session = destination.keys.session

    def change(s) -> list[str]:
        private, outcomes = transport_private_key(session, s), []
        for attribute in (Attribute.DECRYPT, Attribute.SIGN):
            try:
                private[attribute] = True
                outcomes.append(f"{attribute.name} set")
            except p11.PKCS11Error:  # CKR_ACTION_PROHIBITED
                outcomes.append("refused")
            try:
                private.copy({attribute: True}).destroy()
                outcomes.append(f"copied with {attribute.name}")
            except p11.AttributeReadOnly:
                outcomes.append("refused")
        with s.token.open(rw=True, attribute_mapper=ArrayAttributeMapper()) as own:  # can set the template
            try:
                transport_private_key(session, own)[Attribute.UNWRAP_TEMPLATE] = {Attribute.SENSITIVE: False}
                outcomes.append("UNWRAP_TEMPLATE set")
            except p11.PKCS11Error:
                outcomes.append("refused")
        private = transport_private_key(session, s)  # python-pkcs11 gives it methods by what it may do now
        if private[Attribute.DECRYPT]:
            plain = private.decrypt(wrapped.keys[0].wrapped, mechanism=WRAP_MECHANISM, mechanism_param=WRAP_PARAMETER)
            outcomes.append(f"decrypted in clear: {bytes(plain).hex()}")
        return outcomes

    assert session.run(change, "change the transport private key") == ["refused"] * 5



def test_an_export_leaves_an_untrusted_key_that_bears_the_trusted_label(config, state_dir, tokens, tmp_path, clock):
    """Only a key the security officer marked trusted is the ceremony's to destroy: the token's
    user may give a key pair of their own that label (`hsm keygen`)."""
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    own = source.keys.generate(KeyAlgorithm.EC_P256, TRUSTED_LABEL)
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    transport = tmp_path / "transport.pem"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0

    exported = cli(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(transport), "--out",
                   str(tmp_path / "keys.wrapped"), so_pin=SOURCE_SO)

    assert exported.returncode == 0, exported.stderr
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: TRUSTED_LABEL}) == [
        TRUSTED_LABEL]
    source.keys.public_key(own.key_id)


def test_the_transport_key_has_the_configured_size_and_a_source_takes_none_smaller(config, state_dir, tokens, tmp_path,
                                                                                  clock):
    """hsm.transport_key_bits: the size receive-begin generates, and the least export takes (the
    default 3072 at both ends here; the other tests run at TEST_COSTS' 2048)."""
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    source.keys.session.close()
    cheap, default = Cli(state_dir, tmp_path / "source"), Cli(state_dir, tmp_path / "source", **production_environ())
    small, large = tmp_path / "small.pem", tmp_path / "large.pem"
    assert cheap(destination_token, DESTINATION_USER, "receive-begin", "--out", str(small)).returncode == 0
    assert default(destination_token, DESTINATION_USER, "receive-begin", "--out", str(large)).returncode == 0
    assert [load_pem_public_key(p.read_bytes()).key_size for p in (small, large)] == [2048, 3072]

    refused = default(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(small), "--out",
                      str(tmp_path / "refused.wrapped"), so_pin=SOURCE_SO)
    assert refused.returncode != 0 and "at least 3072 bits" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused.wrapped").exists()
    assert objects(source, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}) == []
    source.keys.session.close()

    taken = cheap(source_token, SOURCE_USER, "export", master_label(1), "--transport", str(large), "--out",
                  str(tmp_path / "keys.wrapped"), so_pin=SOURCE_SO)
    assert taken.returncode == 0, taken.stderr  # a larger key than the least asked for


def test_a_transport_key_pair_whose_public_half_was_not_handed_out_is_destroyed(config, tokens, tmp_path, clock):
    """What `receive-begin` does when it cannot write the public half: the pair is of no use."""
    from signserver.hsm import ceremony

    destination = service_on(config, tmp_path / "destination", tokens[1], DESTINATION_USER, clock)
    transport = ceremony.begin_receiving(destination.keys.session, config.hsm.transport_key_bits)

    ceremony.discard_transport_pair(destination.keys.session, transport.fingerprint)

    assert objects(destination, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) == []
    assert objects(destination, {Attribute.CLASS: ObjectClass.PUBLIC_KEY}) == []
