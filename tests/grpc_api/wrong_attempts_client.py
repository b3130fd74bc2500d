"""A separate client process for the parallel lockout tests: sends N Authorize calls with a wrong
password at once and prints how each ended, as JSON. :func:`run_clients` starts several."""

import collections
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from signserver.v1 import signing_pb2, signing_pb2_grpc


def main() -> None:
    port, cert, api_key, account, credential, count = sys.argv[1:7]
    client = sys.argv[7:9]  # optional client certificate and key, for mutual TLS
    credentials = grpc.ssl_channel_credentials(
        open(cert, "rb").read(), private_key=open(client[1], "rb").read() if client else None,
        certificate_chain=open(client[0], "rb").read() if client else None)
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        request = signing_pb2.AuthorizeRequest(account=account, password="Wrong-password-1", otp="123456",
                                               credential_id=credential,
                                               hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256,
                                               digests=[bytes(32)])

        def call(_):
            try:
                stub.Authorize(request, metadata=[("x-api-key", api_key)] if api_key else [], timeout=60)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

        with ThreadPoolExecutor(int(count)) as pool:
            print(json.dumps(collections.Counter(pool.map(call, range(int(count))))))


def run_clients(port: int, ca_file: Path, api_key: str, account: str, credential: str, *client_files: Path,
                processes: int = 5, calls: int = 10, timeout: float = 180) -> dict[str, int]:
    """``processes`` clients at once, each making ``calls`` wrong Authorize calls at once;
    returns how many calls ended with each status code. ``client_files``: certificate and key,
    for mutual TLS."""
    root = Path(__file__).resolve().parents[2]
    clients = [subprocess.Popen(
        [sys.executable, __file__, str(port), str(ca_file), api_key, account, credential, str(calls),
         *map(str, client_files)], stdout=subprocess.PIPE, text=True, cwd=root) for _ in range(processes)]
    totals: collections.Counter[str] = collections.Counter()
    for client in clients:
        out, _ = client.communicate(timeout=timeout)
        assert client.returncode == 0
        totals.update(json.loads(out))
    return dict(totals)


if __name__ == "__main__":
    main()
