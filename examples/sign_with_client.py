#!/usr/bin/env python3
"""Sign a PDF through a signserver with the Python client, then sign a hash after an Authorize.

    SIGNSERVER_ACCOUNT_PASSWORD=... SIGNSERVER_ACCOUNT_OTP=123456 \\
    .venv/bin/python examples/sign_with_client.py localhost:50051 --ca var/demo/ca.pem \\
        --cert var/demo/portal.pem --key var/demo/portal-key.pem \\
        --account demo.holder --credential "$(cat var/demo/credential)" examples/sample.pdf out/signed.pdf

The application authenticates with its client certificate (--cert, --key) or its API key
(SIGNSERVER_API_KEY). The holder's password comes from SIGNSERVER_ACCOUNT_PASSWORD (else it is
asked for); the one-time password from SIGNSERVER_ACCOUNT_OTP, --otp-seed (a file holding the
holder's TOTP seed: development only) or a prompt; --no-otp when the application needs none. An
OTP is single-use: the second step (the Authorize for the hash) asks for a fresh one.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signserver.client import PdfOptions, SignServerClient, SignServerClientError, Stamp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="host:port of the signserver")
    parser.add_argument("--ca", type=Path, required=True, help="CA certificates to trust for the server (PEM)")
    parser.add_argument("--cert", type=Path, help="the application's client certificate (PEM)")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    parser.add_argument("--account", required=True)
    parser.add_argument("--credential", required=True)
    parser.add_argument("--no-otp", action="store_true", help="the application does not require an OTP")
    parser.add_argument("--otp-seed", type=Path, help="file with the holder's TOTP seed (development only)")
    parser.add_argument("pdf", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()

    password = os.environ.get("SIGNSERVER_ACCOUNT_PASSWORD") or getpass.getpass("password: ")

    def one_time_password(step: int) -> str | None:
        if args.no_otp:
            return None
        if args.otp_seed:
            import pyotp  # development only: the holder's app shows the code in real life
            totp = pyotp.TOTP(args.otp_seed.read_text().strip())
            if step:  # a code is single-use: wait for the next one
                time.sleep(totp.interval - time.time() % totp.interval + 1)
            return totp.now()
        if step == 0 and os.environ.get("SIGNSERVER_ACCOUNT_OTP"):
            return os.environ["SIGNSERVER_ACCOUNT_OTP"]
        return input("one-time password: ")

    client = SignServerClient(
        args.address, root_certificates=args.ca.read_bytes(),
        client_certificate=args.cert.read_bytes() if args.cert else None,
        client_key=args.key.read_bytes() if args.key else None, api_key=os.environ.get("SIGNSERVER_API_KEY"))
    try:
        with client:
            # 1. A whole document in one call: factors and PDF up, the signed PDF down.
            signed = client.sign_pdf(args.pdf, args.output, account=args.account, password=password,
                                     otp=one_time_password(0), credential_id=args.credential,
                                     options=PdfOptions(level="B-T", stamp=Stamp(caption="數碼簽署 Assinatura digital")))
            print(f"signed {args.pdf} -> {args.output} ({signed.size} bytes)")
            verification = client.verify_pdf(args.output)
            print(f"verified: {'VALID' if verification.verdict else 'NOT VALID'}: {verification.reason}")

            # 2. Hash signing: authorise the digests, sign them, check the signature locally.
            message = b"an order the holder approves"
            digest = hashlib.sha256(message).digest()
            authorization = client.authorize(args.account, password, one_time_password(1), digests=[digest],
                                             credential_id=args.credential)
            info = client.credential_info(authorization.credential_id)
            algorithm = "ecdsa-sha256" if "ecdsa-sha256" in info.signature_algorithms else "rsa-pss-sha256"
            [signature] = client.sign_hashes(authorization, [digest], algorithm)
            check(load_der_public_key(info.public_key_der), signature, digest)
            print(f"signed a SHA-256 digest with {algorithm}: the signature verifies with the credential's key"
                  f" ({len(info.certificates)} certificates in its chain)")
    except SignServerClientError as error:
        print(f"refused: {error.code}: {error.message}"
              + (f" [{error.help_code}]" if error.help_code else ""), file=sys.stderr)
        return 1
    return 0 if verification.verdict else 1


def check(public_key, signature: bytes, digest: bytes) -> None:
    """Raises: cryptography's InvalidSignature."""
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    elif isinstance(public_key, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        public_key.verify(signature, digest, pss, prehashed)
    else:
        raise SystemExit(f"no local check for a {type(public_key).__name__}")


if __name__ == "__main__":
    sys.exit(main())
