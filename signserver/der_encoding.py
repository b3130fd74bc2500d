"""DER for what is signed, whatever encoding a client's request came in."""

from __future__ import annotations

from typing import TypeVar

from asn1crypto import core

from signserver.errors import InvalidArgument

Echoed = TypeVar("Echoed", bound=core.Sequence)


def echoed_in_der(value: Echoed) -> Echoed:
    """A part of a client's request that an answer repeats (an OCSP CertID, a time-stamp
    request's message imprint: each with a ``hash_algorithm``), built again from its values, so
    in DER, as a new value of its type; a NULL hash-algorithm parameter stays.

    asn1crypto reads BER forms that DER forbids (an INTEGER with a redundant leading zero, a
    length in long form) and keeps the bytes it read: repeated as read into what is signed, they
    would make an answer that is not DER (RFC 6960 4.2.1, RFC 3161 2.4.2), which OpenSSL and
    ``cryptography`` refuse.

    Raises: InvalidArgument: ``value``, or a structure in it, holds an element after the last one
    its type defines (asn1crypto reads it all the same, and then cannot build the value again).
    """
    try:
        rebuilt = type(value)(value.native)
    except ValueError as exc:  # asn1crypto: "One or more unknown fields was passed to the constructor"
        raise InvalidArgument(f"the {type(value).__name__} holds an element it does not define") from exc
    if isinstance(value["hash_algorithm"]["parameters"], core.Null):  # built from values, it is left out
        rebuilt["hash_algorithm"]["parameters"] = core.Null()
    return type(value).load(rebuilt.dump(force=True))
