"""`signserver serve` with two workers: each serves the CSC API on the one reserved port."""

from __future__ import annotations

import re
import ssl

import httpx

from tests.grpc_api.serve_process import ServeProcess

CSC_LINE = r"worker \d+ \(pid \d+\) CSC API on https://127\.0\.0\.1:(\d+)/csc/v2/"


def test_every_worker_serves_the_csc_api_over_https(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=2).start()
    try:
        port = server.wait_for(CSC_LINE, count=2)
        trust = ssl.create_default_context(cafile=str(state_dir / "tls" / "server.pem"))
        trust.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the file holds the server's issuing CA
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=60) as client:
            info = client.post("/csc/v2/info", json={})
            document = client.get("/csc/v2/openapi.json")
            refused = client.post("/csc/v2/credentials/info", json={"credentialID": "x"})
        assert info.status_code == 200 and info.json()["specs"].startswith("2.")
        assert "/csc/v2/signatures/signHash" in document.json()["paths"]
        assert "/csc/v1/signatures/signHash" in document.json()["paths"]
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
        ports = {int(p) for p in re.findall(CSC_LINE, server.text())}
        assert ports == {port}
    finally:
        assert server.stop() == 0, server.text()[-3000:]
