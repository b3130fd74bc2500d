"""The RA is a separate program: its package imports nothing of the core (import-linter contracts
in pyproject.toml), and a `signserver ra` process never loads the core's modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CORE = ("cli.accounts", "cli.ca", "cli.hsm", "grpc_api", "http", "service", "demo", "pades", "ca", "signing",
        "accounts", "audit", "notify", "hsm", "store", "errors", "config", "monitoring", "secret", "v1")


def test_the_import_contracts_of_the_ra_are_kept():
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    kept = [line for line in result.stdout.splitlines() if line.startswith("The RA ")]
    assert kept == ["The RA imports nothing of the core: only the client and the generic utilities KEPT",
                    "The RA speaks the wire contract only through the client KEPT"], result.stdout[-3000:]


def test_a_signserver_ra_process_loads_nothing_of_the_core(tmp_path):
    config = tmp_path / "signserver.toml"
    config.write_text(f'[ra]\ndatabase_url = "sqlite:///{tmp_path / "ra.sqlite"}"\n', encoding="utf-8")
    program = ("import json, sys\n"
               "from signserver.cli.main import main\n"
               f"code = main(['--config', {str(config)!r}, 'ra', '--json', 'renewals'])\n"
               "print(json.dumps({'code': code, 'modules': sorted(m for m in sys.modules if m.startswith('signserver'))}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["code"] == 0
    loaded = [m for m in outcome["modules"] if m.removeprefix("signserver.").startswith(CORE)]
    assert loaded == [] and "signserver.ra.workflow" in outcome["modules"]
