"""The key ceremony's check values bind each key to its label and kind: a file whose label or kind
was altered on its way is refused, whatever check value it is given with."""

from __future__ import annotations

import json

import pytest
from pkcs11 import Attribute, ObjectClass

from signserver.hsm.master_keys import master_label
from signserver.hsm.sealing import SEALING_LABEL
from tests.conftest import requires_softhsm
from tests.hsm.test_ceremony import (DESTINATION_USER, SOURCE_SO, SOURCE_USER, TRANSPORT_LABEL_PREFIX, Cli,
                                     objects, service_on, tokens)

__all__ = ["tokens"]  # the fixture, used by name
pytestmark = [requires_softhsm("one soft token per system, and the ceremony needs a source and a destination "
                               "token"),
              pytest.mark.sqlite_only]


def export(config, state_dir, tokens, tmp_path, clock, *labels: str) -> tuple[Cli, dict]:
    """The source's first master key, and its export (of ``labels``, or of every shared key) to the
    destination's transport key. Returns the command line and what the export printed."""
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    transport = tmp_path / "transport.pem"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0
    exported = cli(source_token, SOURCE_USER, "export", *labels, "--transport", str(transport), "--out",
                   str(tmp_path / "keys.wrapped"), "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    return cli, json.loads(exported.stdout)


def alter(path, **fields) -> None:
    """Change the fields of the file's first key."""
    content = json.loads(path.read_text())
    content["keys"][0].update(fields)
    path.write_text(json.dumps(content))


def nothing_imported(config, tokens, tmp_path, clock) -> None:
    destination = service_on(config, tmp_path / "destination", tokens[1], DESTINATION_USER, clock)
    assert objects(destination, {Attribute.CLASS: ObjectClass.SECRET_KEY}) == []
    assert objects(destination, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) == [f"{TRANSPORT_LABEL_PREFIX}1"]


def test_a_master_key_whose_kind_was_altered_is_refused(config, state_dir, tokens, tmp_path, clock):
    """The kind says what the stored key may do: a master key stored as the sealing kind could
    encrypt and decrypt."""
    cli, printed = export(config, state_dir, tokens, tmp_path, clock, master_label(1))
    alter(tmp_path / "keys.wrapped", kind="sealing")

    refused = cli(tokens[1], DESTINATION_USER, "import", "--in", str(tmp_path / "keys.wrapped"), "--check-value",
                  printed["check_values"])

    assert refused.returncode == 1, refused.stdout
    assert "Traceback" not in refused.stderr
    assert f"{master_label(1)!r} is a master key" in refused.stderr and "nothing was imported" in refused.stderr
    nothing_imported(config, tokens, tmp_path, clock)


def test_a_master_key_relabelled_as_the_sealing_key_is_refused(config, state_dir, tokens, tmp_path, clock):
    """Label and kind altered together, and the check value given for the label the file now
    bears: the source's master key would become the destination's OTP sealing key."""
    cli, printed = export(config, state_dir, tokens, tmp_path, clock, master_label(1))
    alter(tmp_path / "keys.wrapped", label=SEALING_LABEL, kind="sealing")
    [key] = printed["keys"]

    refused = cli(tokens[1], DESTINATION_USER, "import", "--in", str(tmp_path / "keys.wrapped"), "--check-value",
                  f"{SEALING_LABEL}={key['check_value']}")

    assert refused.returncode == 1, refused.stdout
    assert f"the wrapped key {SEALING_LABEL!r} has the check value" in refused.stderr
    assert "nothing was imported" in refused.stderr
    nothing_imported(config, tokens, tmp_path, clock)


def test_a_bare_check_value_needs_the_label_it_is_for(config, state_dir, tokens, tmp_path, clock):
    cli, printed = export(config, state_dir, tokens, tmp_path, clock, master_label(1))
    alter(tmp_path / "keys.wrapped", label=SEALING_LABEL, kind="sealing")
    [key] = printed["keys"]
    wrapped_file = str(tmp_path / "keys.wrapped")

    bare = cli(tokens[1], DESTINATION_USER, "import", "--in", wrapped_file, "--check-value", key["check_value"])
    assert bare.returncode == 1, bare.stdout
    assert "name the key the check value is for" in bare.stderr
    named = cli(tokens[1], DESTINATION_USER, "import", master_label(1), "--in", wrapped_file, "--check-value",
                key["check_value"])
    assert named.returncode == 1, named.stdout
    assert f"holds {SEALING_LABEL}, not {master_label(1)!r}" in named.stderr
    nothing_imported(config, tokens, tmp_path, clock)

    alter(tmp_path / "keys.wrapped", label=master_label(1), kind="master")
    imported = cli(tokens[1], DESTINATION_USER, "import", master_label(1), "--in", wrapped_file, "--check-value",
                   key["check_value"])
    assert imported.returncode == 0, imported.stderr
    destination = service_on(config, tmp_path / "destination", tokens[1], DESTINATION_USER, clock)
    session = destination.keys.session
    assert session.run(lambda s: [(k[Attribute.WRAP], k[Attribute.ENCRYPT], k[Attribute.DECRYPT]) for k in session.find(
        s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: master_label(1)})], "look") == [
        (True, False, False)]


@pytest.mark.parametrize("label", ["signserver-other", "signserver-master-x", f"{SEALING_LABEL}-mac-2"])
def test_a_label_no_shared_key_bears_is_refused(config, state_dir, tokens, tmp_path, clock, label):
    cli, printed = export(config, state_dir, tokens, tmp_path, clock, master_label(1))
    alter(tmp_path / "keys.wrapped", label=label)
    [key] = printed["keys"]

    refused = cli(tokens[1], DESTINATION_USER, "import", "--in", str(tmp_path / "keys.wrapped"), "--check-value",
                  f"{label}={key['check_value']}")

    assert refused.returncode == 1, refused.stdout
    assert "Traceback" not in refused.stderr and "not a wrapped keys file" in refused.stderr
    nothing_imported(config, tokens, tmp_path, clock)


def test_a_file_of_an_earlier_format_is_refused_with_what_to_do(config, state_dir, tokens, tmp_path, clock):
    """Its check values do not bind a key's label and kind: the source exports again."""
    cli, printed = export(config, state_dir, tokens, tmp_path, clock, master_label(1))
    content = json.loads((tmp_path / "keys.wrapped").read_text())
    content["format"] = "signserver wrapped keys 2"
    (tmp_path / "keys.wrapped").write_text(json.dumps(content))

    refused = cli(tokens[1], DESTINATION_USER, "import", "--in", str(tmp_path / "keys.wrapped"), "--check-value",
                  printed["check_values"])

    assert refused.returncode == 1, refused.stdout
    assert "an earlier version" in refused.stderr and "export again" in refused.stderr
    nothing_imported(config, tokens, tmp_path, clock)
