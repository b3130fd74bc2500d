"""The balancer's ports: chosen before the nodes start, held until nginx binds them, and a port
that something else answers on never passes for a started balancer."""

from __future__ import annotations

import errno
import shutil
import socket
from types import SimpleNamespace

import pytest

from tests.cluster.conftest import cluster_script, nginx_missing
from tests.ra.test_ra_process import self_signed

pytestmark = [pytest.mark.skipif(nginx_missing(), reason="nginx is not installed: `make` installs it"),
              pytest.mark.one_store]  # touches no store


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _bind(port: int) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))


def test_the_balancer_ports_stay_taken_from_the_cluster_made_until_it_stops(tmp_path):
    cluster = cluster_script.Cluster(tmp_path / "cluster")
    addresses = (cluster.listen, cluster.csc_listen, cluster.http_listen)
    for address in addresses:
        with pytest.raises(OSError) as taken:
            _bind(_port(address))
        assert taken.value.errno == errno.EADDRINUSE
    cluster.stop()  # never started: it lets the ports go
    for address in addresses:
        _bind(_port(address))


def _certificate_files(folder) -> None:
    """The certificate files nginx's configuration names (nginx reads them before it binds)."""
    folder.mkdir(parents=True)
    certificate, key = self_signed(folder)
    for stem in ("server", "upstream"):
        shutil.copyfile(certificate, folder / f"{stem}.pem")
        shutil.copyfile(key, folder / f"{stem}-key.pem")
    shutil.copyfile(certificate, folder / "ca.pem")


def test_a_port_something_else_answers_on_is_no_started_balancer(tmp_path):
    reservations = cluster_script.PortReservations()
    csc, http = reservations.address(), reservations.address()
    nowhere = SimpleNamespace(port=_port(reservations.address()), csc_port=_port(reservations.address()),
                              http_port=_port(reservations.address()))
    _certificate_files(tmp_path / "balancer")
    with socket.socket() as squatter:  # answers connections on the gRPC port: nginx cannot bind it
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        listen = f"127.0.0.1:{squatter.getsockname()[1]}"
        balancer = cluster_script.Balancer(tmp_path / "balancer", listen, [nowhere], csc, http, reservations)
        try:
            with pytest.raises(RuntimeError, match="nginx did not start") as failed:
                balancer.start()
        finally:
            balancer.stop()
    assert "Address already in use" in str(failed.value)
