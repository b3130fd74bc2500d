"""A separate client process for the parallel lockout test: sends N Authorize calls with a wrong
password at once and prints how each ended, as JSON."""

import collections
import json
import sys
from concurrent.futures import ThreadPoolExecutor

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


if __name__ == "__main__":
    main()
