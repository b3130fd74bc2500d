"""``signserver sign-pdf`` (a client of a running server) and ``signserver verify-pdf``."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TextIO

from signserver.cli.common import check_output, open_service, read_input
from signserver.cli.output import print_json, print_table
from signserver.cli.pins import read_pin
from signserver.cli.progress import ProgressLine
from signserver.cli.text import text_argument
from signserver.config import Config
from signserver.errors import InvalidArgument

PASSWORD_ENV = "SIGNSERVER_ACCOUNT_PASSWORD"
OTP_ENV = "SIGNSERVER_ACCOUNT_OTP"
API_KEY_ENV = "SIGNSERVER_API_KEY"
CHUNK = 1 << 20
MB = 1 << 20


def add_parsers(subparsers) -> None:
    sign = subparsers.add_parser("sign-pdf", help="sign a PDF through a running server", allow_abbrev=False)
    sign.set_defaults(handler=cmd_sign_pdf)
    sign.add_argument("input", type=Path)
    sign.add_argument("output", type=Path)
    sign.add_argument("--address", default="localhost:50051", type=text_argument)
    sign.add_argument("--ca", type=Path, help="CA certificates to trust for the server (default: STATE_DIR/clients/ca.pem)")
    sign.add_argument("--cert", type=Path, help="the application's client certificate (PEM)")
    sign.add_argument("--key", type=Path, help="its private key (PEM)")
    # Text the request carries: a byte that is not UTF-8 is refused here, not by the gRPC encoder.
    sign.add_argument("--account", required=True, type=text_argument)
    sign.add_argument("--credential", required=True, type=text_argument)
    sign.add_argument("--level", default="B-LT", type=text_argument, help="B-B, B-T, B-LT (default) or B-LTA")
    sign.add_argument("--caption", default="", type=text_argument,
                      help='e.g. "數碼簽署" (default "Assinatura digital")')
    sign.add_argument("--time-zone", default="", type=text_argument)
    sign.add_argument("--reason", default="", type=text_argument)
    sign.add_argument("--location", default="", type=text_argument)
    sign.add_argument("--qr-url", default="", type=text_argument, help="add a QR code to this verification address")
    sign.add_argument("--seal", type=Path, help="a seal image (PNG/JPEG) behind the stamp text")
    sign.add_argument("--field", default="", type=text_argument,
                      help="an existing empty signature field, or the new field's name")
    sign.add_argument("--page", type=int, default=0, help="1-based; 0 or -1: the last page")
    sign.add_argument("--rect", default="", type=text_argument, help="x1,y1,x2,y2: points, from the bottom-left corner of the "
                      "page as displayed (its CropBox, rotation applied)")
    sign.add_argument("--invisible", action="store_true")
    sign.add_argument("--no-otp", action="store_true", help="do not ask for an OTP (the application does not require one)")

    verify = subparsers.add_parser(
        "verify-pdf", help="report every signature of a PDF and the document's verdict; exits 0 only when it is valid",
        allow_abbrev=False)
    verify.set_defaults(handler=cmd_verify_pdf)
    verify.add_argument("file", type=Path)
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")


class TransferProgress:
    """Progress of a document's transfer on stderr, every few seconds, with its rate (as `audit
    verify` reports its walk): a document of up to 200 MB takes a while each way."""

    def __init__(self, what: str, total: int | None = None, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None):
        self._what, self._total = what, total
        self._line = ProgressLine(clock, stream)  # from the first chunk: the other way's time is not this one's
        self._done = 0

    def __call__(self, size: int) -> None:
        self._done += size
        elapsed = self._line.due()
        if elapsed is None:
            return
        of = f" of {self._total / MB:,.1f}" if self._total is not None else ""
        self._line.show(f"sign-pdf: {self._what} {self._done / MB:,.1f}{of} MB ({self._done / MB / elapsed:,.1f} MB/s)")


def cmd_sign_pdf(args, config: Config) -> int:
    import grpc  # only this command is a network client

    from signserver.v1 import document_pb2, document_pb2_grpc

    if not args.input.is_file():
        raise InvalidArgument(f"no file at {args.input}")
    # Every file, the output's folder included, before the server is called: a refusal then has
    # spent nothing (no activation, no signature made and lost).
    ca = read_input(args.ca or config.state_dir / "clients" / "ca.pem")
    key, cert, seal = read_input(args.key), read_input(args.cert), read_input(args.seal)
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {args.output}: {exc.strerror}") from None
    check_output(args.output)
    box = [0.0] * 4
    if args.rect:
        try:
            box = [float(v) for v in args.rect.split(",")]
            assert len(box) == 4
        except (ValueError, AssertionError):
            raise InvalidArgument("--rect takes four numbers: x1,y1,x2,y2") from None
    password = read_pin("password", PASSWORD_ENV, None).reveal()
    otp = "" if args.no_otp else read_pin("one-time password", OTP_ENV, None).reveal()
    metadata = [("x-api-key", os.environ[API_KEY_ENV])] if os.environ.get(API_KEY_ENV) else []
    stamp = document_pb2.Stamp(invisible=args.invisible, caption=args.caption, time_zone=args.time_zone,
                               reason=args.reason, location=args.location, verification_url=args.qr_url,
                               seal_image=seal or b"", field_name=args.field,
                               page=args.page, x1=box[0], y1=box[1], x2=box[2], y2=box[3])

    def requests():
        yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
            account=args.account, password=password, otp=otp, credential_id=args.credential, level=args.level,
            stamp=stamp))
        with args.input.open("rb") as source:
            while chunk := source.read(CHUNK):
                sent(len(chunk))
                yield document_pb2.SignPdfRequest(chunk=chunk)

    sent, received = TransferProgress("sent", args.input.stat().st_size), TransferProgress("received")
    credentials = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
    # Written beside the target and renamed at the end: never a half-written output.
    with tempfile.NamedTemporaryFile(dir=args.output.parent, delete=False, suffix=".part") as partial:
        try:
            with grpc.secure_channel(args.address, credentials) as channel:
                stub = document_pb2_grpc.DocumentServiceStub(channel)
                for response in stub.SignPdf(requests(), metadata=metadata, timeout=600):
                    if response.WhichOneof("part") == "chunk":
                        partial.write(response.chunk)
                        received(len(response.chunk))
            partial.close()
            os.replace(partial.name, args.output)
        except grpc.RpcError as error:
            os.unlink(partial.name)
            print(f"signserver: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except BaseException:
            os.unlink(partial.name)
            raise
    print(f"signed {args.input} -> {args.output}")
    return 0


def cmd_verify_pdf(args, config: Config) -> int:
    service = open_service(args, config, with_database=True)
    try:
        source = args.file.open("rb")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {args.file}: {exc.strerror}") from None
    with source:
        verdict = service.pades.verify_pdf(source)
    if args.json:
        print_json(verdict)
    else:
        print_table(["FIELD", "SIGNER", "INTACT", "VALID", "TRUSTED", "LEVEL", "SIGNED AT", "TIMESTAMP", "CHANGED AFTER",
                     "VERDICT"],
                    [[r.field, r.signer, _yes(r.intact), _yes(r.valid), _yes(r.trusted), r.level,
                      r.signing_time or "-", r.timestamp or "-",
                      ("yes, allowed" if r.modification_allowed else "yes, NOT allowed") if r.modified_after_signing
                      else "no", "valid" if r.verdict else "NOT VALID"] for r in verdict.signatures],
                    empty="no signatures")
        print(f"\ndocument: {'VALID' if verdict.verdict else 'NOT VALID'}: {verdict.reason}")
    # Only the document's verdict decides: a signature that is intact, valid and trusted says
    # nothing about what was added to the document after it.
    return 0 if verdict.verdict else 1


def _yes(value: bool) -> str:
    return "yes" if value else "NO"
