"""Two tokens sharing one database: a key left on token B under a label a rotation on token A
later takes (a `rotate --prepare` on B stopped before recording its key) blocks the ceremony's
import on B, until `signserver hsm master retire --orphans` on B destroys it."""

from __future__ import annotations

import json

import pytest

from signserver.hsm.master_keys import master_label
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, requires_softhsm
from tests.hsm.test_ceremony import DESTINATION_USER, SOURCE_SO, SOURCE_USER, Cli, service_on, tokens

__all__ = ["tokens"]  # the fixture, used by name
pytestmark = [requires_softhsm("one soft token per system, and the ceremony needs a source and a destination "
                               "token"),
              pytest.mark.sqlite_only]


def ceremony(cli: Cli, tokens, tmp_path, name: str, *labels: str) -> tuple[str, str]:
    """receive-begin on B, export from A. Returns the wrapped file and its check values."""
    source_token, destination_token = tokens
    transport, wrapped = tmp_path / f"{name}.pem", tmp_path / f"{name}.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", *labels, "--transport", str(transport), "--out",
                   str(wrapped), "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    return str(wrapped), json.loads(exported.stdout)["check_values"]


def test_a_stray_key_under_a_label_the_database_records_is_destroyed_by_retire_orphans(
        config, state_dir, tokens, tmp_path, clock):
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")  # both tokens on the source's database
    wrapped, check_values = ceremony(cli, tokens, tmp_path, "first")
    assert cli(destination_token, DESTINATION_USER, "import", "--in", wrapped, "--check-value",
               check_values).returncode == 0
    destination = service_on(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    stray = destination.master_keys.create(master_label(2))  # what the stopped rotation on B left
    destination.keys.session.close()
    prepared = cli(source_token, SOURCE_USER, "rotate", "--prepare", "--json")
    assert prepared.returncode == 0, prepared.stderr
    assert json.loads(prepared.stdout)["prepared"] == master_label(2)
    wrapped, check_values = ceremony(cli, tokens, tmp_path, "second", master_label(2))

    refused = cli(destination_token, DESTINATION_USER, "import", "--in", wrapped, "--check-value", check_values)
    assert refused.returncode == 1
    assert f"already holds another key labelled {master_label(2)!r}" in refused.stderr
    assert "`signserver hsm master retire --orphans`" in refused.stderr
    status = cli(destination_token, DESTINATION_USER, "status")
    assert status.returncode == 0, status.stderr
    assert "different key" in status.stdout and "retire --orphans" in status.stdout
    # `hsm delete` deletes key pairs: it says where master keys go.
    deleted = cli_forkserver.run([str(SIGNSERVER), "hsm", "delete", master_label(2), "--yes", "--token",
                                  destination_token], env={**cli.env, "SIGNSERVER_HSM_USER_PIN": DESTINATION_USER},
                                 capture_output=True, text=True, timeout=120)
    assert deleted.returncode == 1
    assert "is a master key" in deleted.stderr and "retire --orphans" in deleted.stderr
    unconfirmed = cli(destination_token, DESTINATION_USER, "retire", "--orphans")
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert stray.check_value in unconfirmed.stderr

    cleared = cli(destination_token, DESTINATION_USER, "retire", "--orphans", "--yes", "--json")

    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["destroyed_different"] == [master_label(2)]
    assert not destination.master_keys.present(master_label(2))
    destination.keys.session.close()
    imported = cli(destination_token, DESTINATION_USER, "import", "--in", wrapped, "--check-value", check_values)
    assert imported.returncode == 0, imported.stderr
    on_b = {m["label"]: m["on_token"] for m in json.loads(
        cli(destination_token, DESTINATION_USER, "status", "--json").stdout)}
    assert on_b == {master_label(1): "yes", master_label(2): "yes"}
    # Run again, it leaves the keys the database records.
    again = cli(destination_token, DESTINATION_USER, "retire", "--orphans", "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["destroyed_different"] == []
    assert destination.master_keys.present(master_label(1)) and destination.master_keys.present(master_label(2))
