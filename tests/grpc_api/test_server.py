"""The gRPC server over real TLS on a free port: health, reflection, ServerInfo, error mapping."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from signserver import errors
from signserver.config import ServerConfig
from signserver.grpc_api.errors import GENERIC_INTERNAL_MESSAGE, status_for
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.session import TokenSession
from signserver.service import SignService
from signserver.v1 import info_pb2, info_pb2_grpc
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env
from tests.grpc_api.conftest import ServerThread


def health_of(channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_is_serving(channel):
    assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
    assert health_of(channel, "signserver.v1.InfoService") == health_pb2.HealthCheckResponse.SERVING


def test_server_info(channel, config):
    info = info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10)
    assert re.fullmatch(r"\d+\.\d+\.\d+", info.version)
    assert info.token.label == config.hsm.token_label
    assert info.token.model.startswith("SoftHSM")
    assert {"rsa-2048", "rsa-4096", "ec-p256", "ec-p384", "ed25519"} <= set(info.key_algorithms)
    assert {"rsa-pss-sha256", "ecdsa-sha384", "ed25519"} <= set(info.signature_algorithms)


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"signserver.v1.InfoService", "grpc.health.v1.Health"} <= names


def test_a_missing_token_is_not_serving_and_maps_to_unavailable(config):
    service = SignService(config, HsmKeyStore(TokenSession(config.hsm.module, "no-such-token",
                                                   config.hsm.user_pin(environ={}))))
    with ServerThread(config, service) as server, server.channel() as channel:
        assert health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "no token labelled 'no-such-token'" in caught.value.details()


class _BrokenService(SignService):
    def server_info(self):
        raise RuntimeError("internal detail the caller must not see")


def test_unexpected_errors_become_a_generic_internal(config, service, caplog):
    broken = _BrokenService(config, service.keys)
    with ServerThread(config, broken) as server, server.channel() as channel:
        with caplog.at_level(logging.ERROR, logger="signserver.grpc_api.errors"):
            with pytest.raises(grpc.RpcError) as caught:
                info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == GENERIC_INTERNAL_MESSAGE
    assert "internal detail the caller must not see" in caplog.text  # the traceback is in the log


@pytest.mark.parametrize("error,code", [
    (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UnsupportedAlgorithm("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.KeyNotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.TokenNotFound("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.HsmUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.HsmError("x"), grpc.StatusCode.INTERNAL),
    (errors.ConfigurationError("k", "r"), grpc.StatusCode.FAILED_PRECONDITION),
])
def test_status_mapping(error, code):
    assert status_for(error) is code


def test_plaintext_on_loopback_when_configured(config, service):
    plain = replace(config, server=ServerConfig(listen="127.0.0.1:0", plaintext=True))
    with ServerThread(plain, service) as server, server.channel() as channel:
        assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING


def test_tls_refuses_a_plaintext_client(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_of(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_signserver_serve_starts_answers_and_stops_on_sigterm(state_dir, tmp_path):
    """The embedded defaults: the CA is created, issues the server's certificate, and clients
    need a certificate from it (mutual TLS); the CA's HTTP endpoints answer."""
    env = cli_env(state_dir, SIGNSERVER_SERVER_LISTEN="127.0.0.1:0", SIGNSERVER_HTTP_LISTEN="127.0.0.1:0",
                   SIGNSERVER_CSC_LISTEN="127.0.0.1:0")
    process = subprocess.Popen([str(SIGNSERVER), "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        ports: dict[str, int] = {}
        deadline = time.monotonic() + 120
        lines = []
        while len(ports) < 2 and time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            assert line or process.poll() is None, "".join(lines)
            if match := re.search(r"serving on 127\.0\.0\.1:(\d+) \(TLS with client certificates\)", line):
                ports["grpc"] = int(match.group(1))
            if match := re.search(r"on http://127\.0\.0\.1:(\d+)", line):
                ports["http"] = int(match.group(1))
        assert len(ports) == 2, "".join(lines)

        issued = cli_forkserver.run([str(SIGNSERVER), "ca", "issue-client", "--role", "asp", "health-probe",
                                     "--out-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
        assert issued.returncode == 0, issued.stderr
        credentials = grpc.ssl_channel_credentials(
            (tmp_path / "ca.pem").read_bytes(), private_key=(tmp_path / "health-probe-key.pem").read_bytes(),
            certificate_chain=(tmp_path / "health-probe.pem").read_bytes())
        with grpc.secure_channel(f"localhost:{ports['grpc']}", credentials) as channel:
            assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/crl/issuing.crl", timeout=30) as response:
            assert response.headers["Content-Type"] == "application/pkix-crl"

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert "draining" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
