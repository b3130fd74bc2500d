"""The key ceremony's steps that change a token are appended to the audit log once done: the
destination's transport key pair (its fingerprint), the export and the import (which keys went,
their kinds and check values, and the transport key they were wrapped for; never a key itself)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from signserver.hsm.master_keys import master_label
from signserver.hsm.sealing import SEALING_LABEL
from signserver.store.schema import audit_log
from tests.hsm.test_ceremony import (DESTINATION_USER, SOURCE_SO, SOURCE_USER, Cli, service_on,
                                     tokens)  # noqa: F401 (a fixture)
from tests.conftest import requires_softhsm

pytestmark = [requires_softhsm("the ceremony needs a source and a destination token"),
              pytest.mark.sqlite_only]  # as tests/hsm/test_ceremony.py


def test_the_export_and_the_import_are_recorded(config, state_dir, tokens, tmp_path, clock):  # noqa: F811
    source_token, destination_token = tokens
    source = service_on(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    source.packages.ensure_master()
    cli = Cli(state_dir, tmp_path / "source")  # both commands on the source's database
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    began = cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport), "--json")
    assert began.returncode == 0, began.stderr
    transport_key = json.loads(began.stdout)
    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out", str(wrapped_file),
                   "--json", so_pin=SOURCE_SO)
    assert exported.returncode == 0, exported.stderr
    printed = json.loads(exported.stdout)
    imported = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                   printed["check_values"])
    assert imported.returncode == 0, imported.stderr

    with source.database.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.event.like("hsm.%")).order_by(audit_log.c.seq)).all()
    subject = f"{master_label(1)},{SEALING_LABEL}"
    assert [(r.event, r.actor, r.subject) for r in rows] == [
        ("hsm.transport_key_generated", "operator:cli", transport_key["transport_key"]),
        ("hsm.keys_exported", "operator:cli", subject),
        ("hsm.keys_imported", "operator:cli", subject)]
    assert json.loads(rows[0].detail) == {"sha256": transport_key["sha256"], "token": destination_token}
    assert transport_key["sha256"] == printed["transport_sha256"]  # the key the export was wrapped for
    keys = [{"label": k["label"], "kind": k["kind"], "check_value": k["check_value"]} for k in printed["keys"]]
    assert json.loads(rows[1].detail) == {"keys": keys, "transport_sha256": printed["transport_sha256"],
                                          "token": source_token}
    assert json.loads(rows[2].detail) == {"keys": [{**k, "stored": True} for k in keys], "token": destination_token}
