"""Translation between generated protobuf messages and the domain's values."""

from __future__ import annotations

import datetime

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


def hash_algorithm(value: int) -> HashAlgorithm:
    """Raises: InvalidArgument: unspecified or unknown."""
    if value not in _HASHES:
        raise InvalidArgument("hash_algorithm must be SHA256, SHA384 or SHA512")
    return _HASHES[value]


def signature_algorithm(name: str) -> SignatureAlgorithm:
    """Raises: UnsupportedAlgorithm (an InvalidArgument)."""
    return SignatureAlgorithm.parse(text("signature_algorithm", name))


def text(field: str, value: str, required: bool = True, limit: int = MAX_FIELD) -> str:
    """Raises: InvalidArgument: missing or longer than ``limit`` characters."""
    if required and not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > limit:
        raise InvalidArgument(f"{field} has at most {limit} characters")
    return value


def secret(field: str, value: str, required: bool = True) -> Secret:
    return Secret(text(field, value, required))


def credential(value: Credential) -> signing_pb2.Credential:
    return signing_pb2.Credential(id=value.id, account=value.username, key_algorithm=value.key_algorithm.value,
                                  status=value.status, description=value.description,
                                  created_at=timestamp(value.created_at))
