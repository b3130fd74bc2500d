"""`signserver store prune` when the audit log's part cannot be done (an exported record was altered
since its export): what it says, and that the rest of the store is pruned all the same."""

from __future__ import annotations

import json

from sqlalchemy import update

from benchmarks.audit_verify import fill_log
from signserver.store.schema import audit_log
from tests import cli_forkserver
from tests.audit.test_segments import export
from tests.conftest import SIGNSERVER, cli_env, enrol
from tests.signing.test_retention import counts, issue_many


def test_prune_says_the_audit_log_was_altered_and_what_to_do_and_prunes_the_rest(fresh_service, state_dir,
                                                                                 tmp_path):
    service = fresh_service
    created, _ = enrol(service)
    app, _ = service.applications.create(f"app-{created.account.username}", otp_required=False)
    issue_many(service, app, created, tokens=2, digests_each=1, days_ago=3650)  # long expired
    fill_log(service, 200, seal_every=50)
    export(service, 150, tmp_path / "segment.jsonl")
    with service.database.transaction() as conn:  # altered since it was exported
        conn.execute(update(audit_log).where(audit_log.c.seq == 150).values(hash="00" * 32))

    # The records are days old by the command's real clock: one day's keeping makes them due.
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url, SIGNSERVER_RETENTION_AUDIT_KEEP_DAYS="1")
    result = cli_forkserver.run([str(SIGNSERVER), "store", "prune", "--json"], env=env, capture_output=True,
                                text=True)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("signserver: ") and "audit" in said and "removed no audit record" in said, said
    assert "signserver audit verify --full" in said and "audit_keep_days" in said, said
    assert json.loads(result.stdout)["activation_tokens"] == 2  # the rest of the store was pruned
    assert counts(service) == (0, 0)
