"""The cluster of scripts/cluster.py (what `make cluster` runs) for the tests: two nodes behind a
real nginx, on the tests' token and on the tests' store (a PostgreSQL database with
SIGNSERVER_TEST_STORE=postgresql, else one SQLite file both nodes share)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import grpc
import pytest

from tests.conftest import ON_OPENCRYPTOKI, ROOT, database_url, share_stamp_fonts


def _script():
    spec = importlib.util.spec_from_file_location("signserver_cluster_script", ROOT / "scripts" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cluster_script = _script()


def nginx_missing() -> bool:
    return shutil.which("nginx") is None and not Path("/usr/sbin/nginx").is_file()


@pytest.fixture(scope="module")
def cluster(state_dir, tmp_path_factory, font_cache):
    """Node A, node B (one worker each: two cores) and the balancer, for a module's tests."""
    if ON_OPENCRYPTOKI:
        pytest.skip("openCryptoki's soft token is one per system: the nodes share SoftHSM's token directory")
    if nginx_missing():
        pytest.skip("nginx is not installed and could not be: `make` installs it (scripts/system-packages.sh)")
    folder = tmp_path_factory.mktemp("cluster")
    for node in ("node-a", "node-b"):  # the state directories scripts/cluster.py gives its nodes
        share_stamp_fonts(folder / node, font_cache)
    running = cluster_script.Cluster(folder, workers=1, database_url=database_url(folder / "cluster.db"),
                                     hsm_state=state_dir).start()
    yield running
    running.stop()


class Client:
    """An application's client certificate, issued by the cluster's CA; opens channels to the
    balancer or to one node directly."""

    def __init__(self, cluster, name: str, folder: Path):
        self.cluster = cluster
        self.certificate = folder / f"{name}.pem"
        self.key = folder / f"{name}-key.pem"

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.cluster.ca_file.read_bytes(), private_key=self.key.read_bytes(),
                                            certificate_chain=self.certificate.read_bytes())

    def channel(self, port: int) -> grpc.Channel:
        # A subchannel of its own: a channel to the same port opened earlier must not be reused.
        return grpc.secure_channel(f"localhost:{port}", self.credentials(),
                                   options=[("grpc.use_local_subchannel_pool", 1)])
