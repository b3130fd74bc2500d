"""Signature activation tokens (SAD), as in the remote-signing standards (CSC API, SCAL2).

``issue`` follows a successful authentication: the token is bound to one credential, one calling
application, one digest algorithm and an explicit list of digests, each signable once, and it
expires after a few minutes. Only its SHA-256 is stored. ``consume`` marks the requested digests
used in one transaction, so a token can never authorise more than it was issued for, even under
concurrent calls, and only while the token's account is active: a token never outlives a disable.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Connection, bindparam, case, delete, exists, func, insert, null, select, tuple_, update

from signserver.clock import epoch_seconds, from_epoch
from signserver.errors import ActivationRefused, InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm
from signserver.store.prepared import PreparedStatement
from signserver.store.schema import accounts, activation_token_digests, activation_tokens


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown to the caller once
    expires_at: datetime.datetime
    digests: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_digests(digests: list[bytes], algorithm: HashAlgorithm, maximum: int) -> None:
    """Raises: InvalidArgument: none, too many, duplicated, or of the wrong length."""
    if not digests:
        raise InvalidArgument("at least one digest is needed")
    if len(digests) > maximum:
        raise InvalidArgument(f"at most {maximum} digests per authorisation, not {len(digests)}")
    for index, digest in enumerate(digests):
        if len(digest) != algorithm.digest_size:
            raise InvalidArgument(f"digest {index} has {len(digest)} bytes; a {algorithm.value.upper()} "
                                  f"digest has {algorithm.digest_size}")
    if len(set(digests)) != len(digests):
        raise InvalidArgument("the same digest appears twice")


def issue(conn: Connection, *, credential_id: str, account_id: int, application_id: int,
          algorithm: HashAlgorithm, digests: list[bytes], now: datetime.datetime,
          lifetime: datetime.timedelta, seal_key: Callable[[str, str], bytes] | None = None) -> IssuedToken:
    """Store a new token for these digests (already checked) and return it.

    ``seal_key(token, token_hash)``, for a package credential, gives what the token carries to
    the signatures: the wrapped key sealed under the token (see SigningPackages.seal_for_token).
    """
    token = secrets.token_urlsafe(32)
    hashed = token_hash(token)
    expires = now + lifetime
    conn.execute(insert(activation_tokens).values(
        token_hash=hashed, credential_id=credential_id, account_id=account_id,
        application_id=application_id, hash_algorithm=algorithm.value, expires_at=epoch_seconds(expires),
        revoked=False, created_at=epoch_seconds(now), unspent=len(digests),
        sealed_key=seal_key(token, hashed) if seal_key is not None else None))
    conn.execute(insert(activation_token_digests),
                 [{"token_hash": hashed, "digest": d.hex(), "used": False} for d in digests])
    return IssuedToken(token=token, expires_at=from_epoch(epoch_seconds(expires)), digests=len(digests))


_UPDATE_CHUNK = 500  # digests per UPDATE: well under every database's limit on parameters
# Built once: spending a token is on the way to every signature. The digests are taken only
# while the token itself holds: unrevoked, unexpired, for this credential, application and
# digest algorithm, and its account active (a disable revokes the account's tokens; this holds
# even for one issued as it committed); so the way to a signature costs one statement per chunk.
_TOKEN_HOLDS = (select(activation_tokens.c.token_hash)
                .join(accounts, accounts.c.id == activation_tokens.c.account_id)
                .where(activation_tokens.c.token_hash == bindparam("of_token"),
                       accounts.c.status == "active",
                       activation_tokens.c.revoked.is_(False),
                       activation_tokens.c.expires_at > bindparam("now"),
                       activation_tokens.c.credential_id == bindparam("credential_id"),
                       activation_tokens.c.application_id == bindparam("application_id"),
                       activation_tokens.c.hash_algorithm == bindparam("algorithm"))
                .exists())
_UNUSED_OF_HOLDING_TOKEN = (activation_token_digests.c.token_hash == bindparam("of_token"),
                            activation_token_digests.c.used.is_(False), _TOKEN_HOLDS)
_TAKE_DIGESTS = (update(activation_token_digests)
                 .where(activation_token_digests.c.digest.in_(bindparam("wanted", expanding=True)),
                        *_UNUSED_OF_HOLDING_TOKEN)
                 .values(used=True))
# One digest, the commonest call, without the list of an IN (.. ) that is rendered anew each time.
_TAKE_DIGEST = PreparedStatement(update(activation_token_digests)
                                 .where(activation_token_digests.c.digest == bindparam("wanted"),
                                        *_UNUSED_OF_HOLDING_TOKEN)
                                 .values(used=True))


def consume(conn: Connection, *, token: str, credential_id: str, application_id: int,
            algorithm: HashAlgorithm, digests: list[bytes], now: datetime.datetime) -> None:
    """Mark ``digests`` used under ``token``, or refuse and leave the caller's transaction to
    roll back whatever was taken.

    Raises:
        ActivationRefused: unknown, expired or revoked token; its account disabled; another
            credential, application or digest algorithm; a digest not authorised, already signed,
            or beyond the token's count.
        InvalidArgument: no digest (none would be taken, and none wanted: "spent" without a
            look at the token).
    """
    if not digests:
        raise InvalidArgument("at least one digest is needed")
    hashed = token_hash(token)
    wanted = [d.hex() for d in digests]  # distinct: check_digests refuses repeats
    token_holds = {"of_token": hashed, "now": epoch_seconds(now), "credential_id": credential_id,
                   "application_id": application_id, "algorithm": algorithm.value}
    if len(wanted) == 1:
        taken = _TAKE_DIGEST.execute(conn, {**token_holds, "wanted": wanted[0]}).rowcount
    else:
        taken = sum(conn.execute(_TAKE_DIGESTS, {**token_holds, "wanted": wanted[start:start + _UPDATE_CHUNK]}).rowcount
                    for start in range(0, len(wanted), _UPDATE_CHUNK))
    if taken != len(wanted):
        explain_refusal(conn, hashed, credential_id, application_id, algorithm, wanted, taken, now)


def count_spent(conn: Connection, hashed_token: str, taken: int) -> int:
    """For a token that carries a sealed key, after :func:`consume`: its count of unspent digests
    goes down, and the sealed key is erased with the last one. Returns the count left."""
    return _COUNT_SPENT.execute(conn, {"of_token": hashed_token, "taken": taken}).one().unspent


# One statement, by primary key: the count goes down, and the sealed key goes with the last digest.
_COUNT_SPENT = PreparedStatement(
    update(activation_tokens).where(activation_tokens.c.token_hash == bindparam("of_token"))
    .values(unspent=activation_tokens.c.unspent - bindparam("taken"),
            sealed_key=case((activation_tokens.c.unspent <= bindparam("taken"), null()),
                            else_=activation_tokens.c.sealed_key))
    .returning(activation_tokens.c.unspent))


def still_sealed_expired(now: datetime.datetime, limit: int):
    """The query of at most ``limit`` tokens expired by ``now`` that still carry a sealed key, read
    through the partial index of those (ix_activation_tokens_sealed_expiry): not through every
    expired token retention keeps."""
    return (select(activation_tokens.c.token_hash)
            .where(activation_tokens.c.expires_at <= epoch_seconds(now), activation_tokens.c.sealed_key.is_not(None))
            .limit(limit))


def forget_sealed_keys(conn: Connection, now: datetime.datetime, limit: int) -> int:
    """Erase the sealed keys of at most ``limit`` tokens expired by ``now`` that still carry one,
    however long ago they expired; returns how many."""
    return conn.execute(update(activation_tokens)
                        .where(activation_tokens.c.token_hash.in_(still_sealed_expired(now, limit)))
                        .values(sealed_key=None)).rowcount


@dataclass(frozen=True)
class Pruned:
    tokens: int
    digests: int


def prune_expired(conn: Connection, expired_before: datetime.datetime, limit: int) -> Pruned:
    """Remove at most ``limit`` digest rows and ``limit`` tokens among the tokens that expired
    before ``expired_before`` (spent, revoked or unused alike: each expires within minutes of its
    issue), the oldest first; a token goes once it has no digest left. Returns what went.

    Nothing of a removed token can be used again: :func:`consume` refuses a token it cannot
    find ("not valid"), as it refuses an expired one; a token is 256 random bits, never re-issued.
    """
    cutoff = epoch_seconds(expired_before)
    tokens = activation_tokens.c
    digests = activation_token_digests.c
    oldest = (select(tokens.token_hash).where(tokens.expires_at < cutoff)
              .order_by(tokens.expires_at).limit(limit).scalar_subquery())
    pairs = conn.execute(select(digests.token_hash, digests.digest)
                         .where(digests.token_hash.in_(oldest)).limit(limit)).all()
    if pairs:
        conn.execute(delete(activation_token_digests)
                     .where(tuple_(digests.token_hash, digests.digest).in_([tuple(p) for p in pairs])))
    bare = ~exists().where(digests.token_hash == tokens.token_hash)
    removed = conn.execute(delete(activation_tokens).where(tokens.token_hash.in_(oldest), bare)).rowcount
    return Pruned(tokens=removed, digests=len(pairs))


def explain_refusal(conn: Connection, token_hash: str, credential_id: str, application_id: int,
                    algorithm: HashAlgorithm, wanted: list[str], taken: int, now: datetime.datetime) -> None:
    """Work out why fewer digests than ``wanted`` (hex) could be taken under the token, ``taken``
    of them in the caller's transaction (none where the taking was undone); only refusals pay
    for this.

    Raises: ActivationRefused, always.
    """
    row = conn.execute(select(activation_tokens).where(activation_tokens.c.token_hash == token_hash)).first()
    if row is None:
        raise ActivationRefused("the activation token is not valid")
    if row.revoked:
        raise ActivationRefused("the activation token was revoked")
    if epoch_seconds(now) >= row.expires_at:
        raise ActivationRefused("the activation token has expired; authorise again")
    if conn.execute(select(accounts.c.status).where(accounts.c.id == row.account_id)).scalar() != "active":
        raise ActivationRefused("the activation token's account is disabled")
    if row.credential_id != credential_id:
        raise ActivationRefused("the activation token was issued for another credential")
    if row.application_id != application_id:
        raise ActivationRefused("the activation token was issued to another application")
    if row.hash_algorithm != algorithm.value:
        raise ActivationRefused(f"the activation token is for {row.hash_algorithm} digests")
    digest_rows = activation_token_digests.c
    of_token = digest_rows.token_hash == token_hash
    remaining = conn.execute(select(func.count()).where(of_token, digest_rows.used.is_(False))).scalar() + taken
    if len(wanted) > remaining:
        raise ActivationRefused(f"the activation token allows {remaining} more signature(s), not {len(wanted)}"
                                if remaining else "the activation token has been used")
    known = conn.execute(select(func.count()).where(of_token, digest_rows.digest.in_(wanted))).scalar()
    raise ActivationRefused("a digest was already signed with this activation token" if known == len(wanted)
                            else "a digest was not authorised by this activation token")
