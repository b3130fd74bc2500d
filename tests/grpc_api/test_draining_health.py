"""A stopping worker says NOT_SERVING at once, and drains its fronts (gRPC, CSC, the CA's HTTP)
side by side: a load balancer must stop sending it calls while it drains, and a request still
being received on one front must not hold the others open (nor the whole drain past the
supervisor's grace, one front's grace after another)."""

from __future__ import annotations

import socket
import ssl
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc_api.serve_process import ServeProcess

CSC_LINE = r"worker \d+ \(pid \d+\) CSC API on https://127\.0\.0\.1:(\d+)/csc/v2/"


def health(server: ServeProcess, credentials) -> str:
    """The server's health status, or the status code of a check that could not be made."""
    try:
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def test_a_stopping_worker_is_not_serving_while_a_csc_request_is_still_arriving(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=1).start()
    try:
        csc_port = server.wait_for(CSC_LINE)
        made = server.cli("app", "create", "draining-app", "--no-otp")
        assert made.returncode == 0, made.stderr
        credentials = server.client_credentials("draining-app")
        assert health(server, credentials) == "SERVING"

        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        context.load_cert_chain(*map(str, server.client_files))
        with socket.create_connection(("127.0.0.1", csc_port), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as arriving:
            # Half a request: the CSC front waits for the rest of its body while it drains.
            arriving.sendall(b"POST /csc/v2/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{")
            time.sleep(0.5)
            stop_at = time.monotonic()
            server.process.terminate()
            server.wait_for(r"worker 0: stopping, draining calls in flight", timeout=10)
            seen = []
            while time.monotonic() - stop_at < 3.0:
                seen.append(health(server, credentials))
                time.sleep(0.2)
        assert "SERVING" not in seen[1:], seen  # the first check may beat the stop
        assert server.process.wait(60) == 0
    finally:
        server.stop()
