"""Translation between generated protobuf messages and the domain's values."""

from __future__ import annotations

import contextlib
import datetime
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.timestamp_pb2 import Timestamp

from signserver.accounts.model import Credential
from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.v1 import signing_pb2

_HASHES = {
    signing_pb2.HASH_ALGORITHM_SHA256: HashAlgorithm.SHA256,
    signing_pb2.HASH_ALGORITHM_SHA384: HashAlgorithm.SHA384,
    signing_pb2.HASH_ALGORITHM_SHA512: HashAlgorithm.SHA512,
}
MAX_FIELD = 256


def timestamp(moment: datetime.datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value


@contextlib.contextmanager
def field_named(field: str) -> Iterator[None]:
    """Names ``field`` on an InvalidArgument raised inside that does not name one yet, so that
    the refusal's BadRequest says which field of the request was at fault.

    Raises: what the block raises.
    """
    try:
        yield
    except InvalidArgument as exc:
        if exc.field is None:
            exc.field = field
        raise


def hash_algorithm(value: int, field: str = "hash_algorithm") -> HashAlgorithm:
    """Raises: InvalidArgument: unspecified or unknown."""
    if value not in _HASHES:
        raise InvalidArgument(f"{field} must be SHA256, SHA384 or SHA512", field=field)
    return _HASHES[value]


def signature_algorithm(name: str, field: str = "signature_algorithm") -> SignatureAlgorithm:
    """Raises: UnsupportedAlgorithm (an InvalidArgument)."""
    with field_named(field):
        return SignatureAlgorithm.parse(text(field, name))


def text(field: str, value: str, required: bool = True, limit: int = MAX_FIELD) -> str:
    """Raises: InvalidArgument: missing or longer than ``limit`` characters (naming ``field``)."""
    if required and not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > limit:
        raise InvalidArgument(f"{field} has at most {limit} characters", field=field)
    return value


def secret(field: str, value: str, required: bool = True) -> Secret:
    """Raises: InvalidArgument: missing or too long (naming ``field``)."""
    return Secret(text(field, value, required))


def certificate_der(value: x509.Certificate) -> bytes:
    return value.public_bytes(serialization.Encoding.DER)


def credential(value: Credential) -> signing_pb2.Credential:
    return signing_pb2.Credential(id=value.id, account=value.username, key_algorithm=value.key_algorithm.value,
                                  status=value.status, description=value.description,
                                  created_at=timestamp(value.created_at))
