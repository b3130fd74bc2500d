"""The CSC API's signHash over HTTPS beside gRPC's SignHash, on one server in one run.

Both sides sign for the same RSA-2048 holder with the same application (its client certificate
on both: mutual TLS), at concurrency 8, with connections spread evenly over the workers; each
caller authorises a token (a SAD) of ``load.TOKEN_DIGESTS`` digests outside the measured window.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import socket
import ssl
import tempfile
import urllib.parse
from pathlib import Path


from benchmarks import load
from benchmarks.load import CONNECT_ATTEMPTS, Caller, LoadResult, Target

SHA256 = "2.16.840.1.101.3.4.2.1"
RSA_SHA256 = "1.2.840.113549.1.1.11"
WORKER_HEADER = "X-Signserver-Worker"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class KeptConnection:
    """One kept-alive HTTPS connection posting JSON, on the standard library's http.client.

    The clients share the machine's cores with the server, so their cost per call is part of
    every figure: httpx spent about 0.8 ms of CPU per single-hash call here, against 0.3 ms for
    gRPC's client, which would have measured the client library rather than the server.
    """

    def __init__(self, base_url: str, context: ssl.SSLContext):
        address = urllib.parse.urlsplit(base_url)
        self._connection = http.client.HTTPSConnection(address.hostname, address.port, context=context, timeout=120)
        self._connection.connect()
        # TCP_NODELAY, as gRPC's clients have it: Nagle's algorithm would hold a small second
        # write for the server's delayed ACK.
        self._connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: dict) -> tuple[dict, http.client.HTTPMessage]:
        """The answer's JSON and headers. Raises: RuntimeError: not 200."""
        self._connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        answer = self._connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status}: {data[:300]!r}")
        return json.loads(data), answer.headers  # case-insensitive

    def close(self) -> None:
        self._connection.close()


def https_connect(base_url: str):
    """``connect`` for load.run_load: a connection with the application's certificate to a
    worker that serves fewer than its share of callers (see load.balanced_channel: the kernel
    spreads connections unevenly)."""

    def connect(target: Target, share: int, taken) -> contextlib.closing[KeptConnection]:
        root, key, chain = target.credentials
        folder = Path(tempfile.mkdtemp(prefix="csc-bench-"))
        (folder / "key.pem").write_bytes(key)
        (folder / "cert.pem").write_bytes(chain)
        context = ssl.create_default_context(cadata=root.decode())
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        for _ in range(CONNECT_ATTEMPTS):
            connection = KeptConnection(base_url, context)
            worker = int(connection.post("/csc/v2/info", {})[1][WORKER_HEADER])
            with taken.get_lock():
                if worker >= len(taken) or taken[worker] < share:
                    if worker < len(taken):
                        taken[worker] += 1
                    return contextlib.closing(connection)
            connection.close()
        return contextlib.closing(connection)
    return connect


def csc_hash_signer(batch: int) -> Caller:
    """signatures/signHash of ``batch`` hashes per call, spending a SAD authorised beforehand."""

    def setup(client: KeptConnection, target: Target, name: str):
        state = {"round": 0, "position": 0}

        def authorise() -> None:
            digests = [hashlib.sha256(f"{name}-{state['round']}-{i}".encode()).digest()
                       for i in range(load.TOKEN_DIGESTS)]
            answer, _ = client.post("/csc/v2/credentials/authorize", {
                "credentialID": target.credential, "numSignatures": len(digests),
                "hashes": [_b64(d) for d in digests], "hashAlgorithmOID": SHA256,
                "authData": [{"id": "PIN", "value": target.password}]})
            state.update(digests=[_b64(d) for d in digests], sad=answer["SAD"], position=0,
                         round=state["round"] + 1)

        def call() -> int:
            if state["position"] + batch > load.TOKEN_DIGESTS:  # rare: a fresh SAD, inside the window
                authorise()
            position = state["position"]
            answer, _ = client.post("/csc/v2/signatures/signHash", {
                "credentialID": target.credential, "SAD": state["sad"], "signAlgo": RSA_SHA256,
                "hashAlgorithmOID": SHA256, "hashes": state["digests"][position:position + batch]})
            assert len(answer["signatures"]) == batch
            state["position"] = position + batch
            return batch

        authorise()
        return call
    return setup


def run(target: Target, csc_base_url: str, seconds: float) -> list[tuple[LoadResult, LoadResult]]:
    """(gRPC SignHash, CSC signHash) at 1 and 50 hashes per call, concurrency 8, measured
    alternately (load.alternated): one after the other, a machine's drift landed on their ratio
    (0.67 for single hashes in a run whose raw RSA rate moved from 1,035 to 1,598 sig/s; 0.89 and
    0.98 in the next two)."""
    pairs = []
    for batch in (1, 50):
        pairs.append(load.alternated(
            lambda window, batch=batch: load.run_load(
                f"gRPC SignHash, {batch} digest(s)/call, concurrency 8", target, load.hash_signer(batch), 8, window),
            lambda window, batch=batch: load.run_load(
                f"CSC signHash over HTTPS, {batch} hash(es)/call, concurrency 8", target, csc_hash_signer(batch), 8,
                window, connect=https_connect(csc_base_url)),
            seconds))
    return pairs


def main() -> None:
    """``python -m benchmarks.csc_signing [--seconds N]``: only these figures (``make bench`` has them too)."""
    import argparse

    from benchmarks.grpc_signing import served_holder
    from benchmarks.harness import benchmark_service, markdown_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.csc_signing")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with benchmark_service() as (state, service):
        server = None
        try:
            server, target = served_holder(service, state)
            rows = []
            for grpc_result, csc_result in run(target, server.csc_url, args.seconds):
                ratio = csc_result.per_second / grpc_result.per_second
                for result, shown in ((grpc_result, "1.00"), (csc_result, f"{ratio:.2f}")):
                    rows.append([result.name, f"{result.per_second:,.0f} sig/s", shown,
                                 " / ".join(f"{result.percentile(p):,.1f}" for p in (50, 95, 99))])
            print(markdown_table(["figure", "rate", "ratio to gRPC SignHash", "p50 / p95 / p99 ms"], rows))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
