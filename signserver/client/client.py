"""SignServerClient: the gRPC flows an application needs (signing, verifying, changing a holder's
password), in plain Python values."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar, Union

import grpc

from signserver.client import _wire
from signserver.client.errors import SignServerClientError, from_rpc_error
from signserver.client.models import (
    Authorization,
    Credential,
    CredentialInfo,
    HashAlgorithmName,
    PdfOptions,
    PreparedSignature,
    SignedDocument,
    Verification,
)
from signserver.v1 import (
    account_pb2,
    account_pb2_grpc,
    document_pb2,
    document_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
)

API_KEY_HEADER = "x-api-key"
# Well under the server's 4 MB message limit; large enough that a document takes few messages.
CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_SECONDS = 120.0

# A document to read: a path, or a binary file open for reading. A destination: a path (written
# beside and renamed at the end, so never left half-written), or a binary file open for writing.
Document = Union[str, os.PathLike, BinaryIO]
T = TypeVar("T")


class SignServerClient:
    """A client of a signserver's gRPC API for one application, over TLS.

    The application authenticates with its client certificate (``client_certificate`` and
    ``client_key``, PEM), with its API key, or both (then they must be the same application's).
    ``root_certificates`` (PEM) are the CAs trusted for the server's certificate; ``server_name``
    overrides the name checked in it (for an address that is not the name the certificate
    carries). ``timeout`` bounds every call, a document's upload and download included.

    Use it as a context manager, or call close(). Safe to share between threads.
    Every method raises a SignServerClientError subclass (signserver.client.errors) when the
    server refuses the call or it does not complete: besides those each method names,
    ServerUnreachable (no connection could be made: nothing was sent), ServerNotTrusted (a
    ServerUnreachable: the server's certificate did not verify) and DeadlineExceeded (no answer
    within ``timeout``). No call is retried: a call that spends the holder's OTP or an activation
    token must not be sent twice, and the others are cheap to make again.
    """

    def __init__(self, address: str, *, root_certificates: bytes, client_certificate: bytes | None = None,
                 client_key: bytes | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, server_name: str | None = None):
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together")
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key=client_key,
                                                   certificate_chain=client_certificate)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self._channel = grpc.secure_channel(address, credentials, options=options)
        self._signing = signing_pb2_grpc.SigningServiceStub(self._channel)
        self._documents = document_pb2_grpc.DocumentServiceStub(self._channel)
        self._accounts = account_pb2_grpc.AccountServiceStub(self._channel)
        self._metadata = ((API_KEY_HEADER, api_key),) if api_key else ()
        self._timeout = timeout
        self._address, self._server_name = address, server_name

    def __enter__(self) -> "SignServerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    # Credentials

    def list_credentials(self, account: str, activation_token: str | None = None) -> list[Credential]:
        """The holder's credentials: for an application whose policy names the account, or with an
        unexpired activation token the holder's factors produced for this application.

        Raises: PermissionRefused (neither), AuthenticationRefused (the application's own key or
        certificate), InvalidArgument.
        """
        response = self._call("ListCredentials", self._signing.ListCredentials, signing_pb2.ListCredentialsRequest(
            account=account, activation_token=activation_token or ""))
        return [_wire.credential(c) for c in response.credentials]

    def credential_info(self, credential_id: str) -> CredentialInfo:
        """One credential's public key, signature algorithms and (when the server sends them)
        certificate chain.

        Raises: NotFound, AuthenticationRefused, InvalidArgument.
        """
        return _wire.credential_info(self._call("GetCredentialInfo", self._signing.GetCredentialInfo,
                                                signing_pb2.GetCredentialInfoRequest(credential_id=credential_id)))

    # Authorisation and hash signing

    def authorize(self, account: str, password: str, otp: str | None = None, *, digests: Iterable[bytes],
                  credential_id: str | None = None, hash_algorithm: HashAlgorithmName = "sha256") -> Authorization:
        """Check the holder's factors once and get an activation token for ``digests`` (each
        signable once) with ``credential_id``, or with the holder's signing credential when None
        (the returned Authorization names it).

        Raises: AuthenticationRefused (wrong factors, never saying which), AccountLocked,
        PermissionRefused (an account the application may not serve), AccountDisabled (a
        PermissionRefused: the factors are right but the account is disabled), ServerBusy (try
        again), InvalidArgument, CredentialUnusable (the factors are right, but the credential's
        certificate is revoked or expired); ValueError (an unknown ``hash_algorithm``).
        """
        if hash_algorithm not in _wire.HASH_ALGORITHMS:
            raise ValueError(f"hash_algorithm is one of {', '.join(_wire.HASH_ALGORITHMS)}")
        response = self._call("Authorize", self._signing.Authorize, signing_pb2.AuthorizeRequest(
            account=account, password=password, otp=otp or "", credential_id=credential_id or "",
            hash_algorithm=_wire.HASH_ALGORITHMS[hash_algorithm], digests=list(digests)))
        return Authorization(activation_token=response.activation_token, credential_id=response.credential_id,
                             expires_at=_wire.moment(response.expires_at, response.HasField("expires_at")),
                             signatures=response.signatures)

    def authorize_document(self, prepared: PreparedSignature, account: str, password: str,
                           otp: str | None = None) -> Authorization:
        """Step 2 of the two-step flow: authorise exactly the prepared document's digest.

        Raises: as authorize.
        """
        return self.authorize(account, password, otp, digests=[prepared.digest],
                              credential_id=prepared.credential_id, hash_algorithm="sha256")

    def sign_hashes(self, authorization: Authorization, digests: Iterable[bytes],
                    signature_algorithm: str) -> list[bytes]:
        """Sign digests the authorisation covers with ``signature_algorithm`` (e.g.
        "rsa-pss-sha256", "ecdsa-sha256"); raw signature values in the order of the digests (DER
        for ECDSA). The digests may be spent over several calls.

        Raises: ActivationRefused (reused, expired, for another credential or digest, beyond its
        count), NotFound, InvalidArgument (an unknown algorithm, a digest of the wrong size).
        """
        response = self._call("SignHash", self._signing.SignHash, signing_pb2.SignHashRequest(
            credential_id=authorization.credential_id, activation_token=authorization.activation_token,
            signature_algorithm=signature_algorithm, digests=list(digests)))
        return list(response.signatures)

    # Documents

    def sign_pdf(self, document: Document, destination: Document, *, account: str, password: str,
                 otp: str | None = None, credential_id: str, options: PdfOptions = PdfOptions()) -> SignedDocument:
        """Sign a PDF in one call: the holder's factors and the document go up, the signed PDF
        comes down into ``destination``.

        Raises: AuthenticationRefused, AccountLocked, PermissionRefused (also: the application's
        policy requires the two-step flow), InvalidArgument (not a PDF, damaged, a stamp that does
        not fit, ...), ServerBusy, SignServerClientError (DATA_LOSS: the document received does
        not match the server's size and digest); OSError reading or writing the files.
        """
        first = document_pb2.SignPdfRequest(header=_wire.header(options, credential_id, account, password, otp or ""))
        with _reading(document) as source:
            requests = _Upload(_with_chunks(first, source, lambda chunk: document_pb2.SignPdfRequest(chunk=chunk)))
            return self._receive_document("SignPdf", lambda: self._documents.SignPdf(
                requests, metadata=self._metadata, timeout=self._timeout), destination, requests)

    def prepare_pdf(self, document: Document, *, credential_id: str,
                    options: PdfOptions = PdfOptions()) -> PreparedSignature:
        """Step 1 of the two-step flow: place the signature and stamp, get the digest to authorise
        (authorize_document), then complete_pdf (on any worker or node of the service) before it
        expires.

        Raises: NotFound, InvalidArgument, PermissionRefused, ServerBusy; OSError reading the file.
        """
        first = document_pb2.PrepareSignatureRequest(header=_wire.header(options, credential_id))
        with _reading(document) as source:
            requests = _Upload(_with_chunks(first, source,
                                            lambda chunk: document_pb2.PrepareSignatureRequest(chunk=chunk)))
            response = self._call("PrepareSignature", self._documents.PrepareSignature, requests, requests)
        return PreparedSignature(document_id=response.document_id, digest=response.digest,
                                 credential_id=credential_id,
                                 expires_at=_wire.moment(response.expires_at, response.HasField("expires_at")))

    def complete_pdf(self, prepared: PreparedSignature, authorization: Authorization,
                     destination: Document) -> SignedDocument:
        """Step 3 of the two-step flow: spend the activation token on the prepared document; the
        signed PDF comes down into ``destination``.

        Raises: ActivationRefused (a token for another digest or credential, reused, expired),
        NotFound (completed already, or expired),
        SignServerClientError (DATA_LOSS, as sign_pdf); OSError writing the file.
        """
        request = document_pb2.CompleteSignatureRequest(document_id=prepared.document_id,
                                                        activation_token=authorization.activation_token)
        return self._receive_document("CompleteSignature", lambda: self._documents.CompleteSignature(
            request, metadata=self._metadata, timeout=self._timeout), destination)

    def verify_pdf(self, document: Document) -> Verification:
        """Every signature of a PDF and the document's verdict, as the server judges them.

        Raises: InvalidArgument (not a readable PDF, too large), ServerBusy; OSError reading the file.
        """
        with _reading(document) as source:
            requests = _Upload(document_pb2.VerifyPdfRequest(chunk=chunk) for chunk in _chunks(source))
            return _wire.verification(self._call("VerifyPdf", self._documents.VerifyPdf, requests, requests))

    # Accounts

    def change_password(self, account: str, current_password: str, new_password: str, confirmation: str,
                        otp: str = "") -> None:
        """Change the holder's password: the current password (and the OTP when the application's
        policy requires it) are checked as Authorize checks them, and each refusal counts toward
        the account's lockout. The holder is e-mailed and outstanding activation tokens are revoked.

        Raises: InvalidArgument (the confirmation differs, or the new password breaks a rule: at
        least 8 characters, a letter and a non-letter, not the account's name, not a common
        password, not the current one; checked before the factors, and its ``rule`` names which),
        AuthenticationRefused (an unknown account, a wrong current password or OTP: one message),
        AccountLocked (``locked_until``), AccountDisabled (a PermissionRefused; only when the
        factors are right), PermissionRefused (an account the application may not serve),
        ServerBusy.
        """
        self._call("ChangePassword", self._accounts.ChangePassword, account_pb2.ChangePasswordRequest(
            account=account, current_password=current_password, new_password=new_password,
            confirm_new_password=confirmation, otp=otp))

    def replace_recovery_code(self, account: str, password: str, otp: str = "") -> str:
        """A new recovery code for the holder's signing data packages, returned once (show it to
        the holder; it is not kept). The password (and the OTP when the application's policy
        requires it) are checked as Authorize checks them. The earlier code stops working; the
        password and the packages stay as they are; the holder is e-mailed.

        Raises: AuthenticationRefused (an unknown account, a wrong password or OTP: one message),
        AccountLocked (``locked_until``), AccountDisabled (only when the factors are right),
        PermissionRefused (an account the application may not serve), ServerBusy.
        """
        return self._call("ReplaceRecoveryCode", self._accounts.ReplaceRecoveryCode,
                          account_pb2.ReplaceRecoveryCodeRequest(account=account, password=password,
                                                                 otp=otp)).recovery_code

    # Plumbing

    def _call(self, method: str, rpc: Callable[..., T], request, upload: "_Upload | None" = None) -> T:
        """Raises: SignServerClientError (a subclass by status and reason); what reading an
        ``upload`` raised, which ends the call."""
        try:
            return rpc(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise self._error(error, method, upload) from None

    def _error(self, error: grpc.RpcError, method: str, upload: "_Upload | None") -> BaseException:
        if upload is not None and upload.error is not None:
            return upload.error
        return from_rpc_error(error, method, address=self._address, server_name=self._server_name)

    def _receive_document(self, method: str, start: Callable[[], Iterator[document_pb2.SignPdfResponse]],
                          destination: Document, upload: "_Upload | None" = None) -> SignedDocument:
        """Write a signed document's chunks to ``destination`` and check them against the result
        message that precedes them.

        Raises: as :meth:`_call`; SignServerClientError (DATA_LOSS)."""
        with _writing(destination) as target:
            result, size, digest = None, 0, hashlib.sha256()
            try:
                for response in start():
                    if response.WhichOneof("part") == "result":
                        result = response.result
                    else:
                        target.write(response.chunk)
                        size += len(response.chunk)
                        digest.update(response.chunk)
            except grpc.RpcError as error:
                raise self._error(error, method, upload) from None
            if result is None or result.size != size or result.sha256 != digest.digest():
                raise SignServerClientError("DATA_LOSS", "the signed document received does not match the "
                                            "size and SHA-256 the server announced")
        return SignedDocument(size=size, sha256=digest.digest())


class _Upload:
    """The requests of a streaming call. gRPC reads them in a thread of its own and ends the call
    as UNKNOWN ("Exception iterating requests!") when reading fails: the error is kept here, so
    that the caller gets it (an OSError reading the document) rather than a server error."""

    def __init__(self, messages: Iterable[T]):
        self._messages = iter(messages)
        self.error: BaseException | None = None

    def __iter__(self) -> "_Upload":
        return self

    def __next__(self):
        try:
            return next(self._messages)
        except StopIteration:
            raise
        except Exception as exc:
            self.error = exc
            raise


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(CHUNK_BYTES):
        yield chunk


def _with_chunks(first: T, source: BinaryIO, wrap: Callable[[bytes], T]) -> Iterator[T]:
    yield first
    for chunk in _chunks(source):
        yield wrap(chunk)


@contextmanager
def _reading(document: Document) -> Iterator[BinaryIO]:
    """Opened before the call starts, so that a missing file raises OSError here rather than
    cancelling the call from inside gRPC's request iterator."""
    if isinstance(document, (str, os.PathLike)):
        with open(document, "rb") as source:
            yield source
    else:
        yield document


@contextmanager
def _writing(destination: Document) -> Iterator[BinaryIO]:
    if not isinstance(destination, (str, os.PathLike)):
        yield destination
        return
    target = Path(destination)
    partial = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part",
                                          delete=False)
    try:
        with partial:
            yield partial
        os.replace(partial.name, target)
    except BaseException:
        os.unlink(partial.name)
        raise
