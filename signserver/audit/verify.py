"""Verification of the audit chain and its seals: modified, deleted, reordered or cut-off records."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from signserver.audit.log import GENESIS_HASH, AuditLog, record_hash
from signserver.audit.seal import seal_message
from signserver.hsm.algorithms import SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.store.database import Database
from signserver.store.schema import audit_head, audit_seals

BATCH = 5000


@dataclass
class AuditReport:
    records: int = 0
    last_seq: int = 0
    sealed_seq: int = 0
    seals: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_audit_log(database: Database, keys: HsmKeyStore) -> AuditReport:
    """Walk the whole chain and check every link, the head, and every seal's signature.

    Raises: StoreUnavailable, HsmError (reading the audit key).
    """
    report = AuditReport()
    hashes: dict[int, str] = {}
    expected_seq, prev_hash = 1, GENESIS_HASH
    with database.transaction() as conn:
        after = 0
        while True:
            batch = AuditLog.records(conn, after=after, limit=BATCH)
            if not batch:
                break
            for record in batch:
                if record.seq != expected_seq:
                    report.problems.append(f"records {expected_seq} to {record.seq - 1} are missing")
                    prev_hash = record.prev_hash  # go on checking from here
                if record.prev_hash != prev_hash:
                    report.problems.append(f"record {record.seq} does not follow record {record.seq - 1} "
                                           "(deleted, reordered or altered)")
                computed = record_hash(record.prev_hash, record.seq, record.at, record.event, record.actor,
                                       record.subject, record.detail)
                if computed != record.hash:
                    report.problems.append(f"record {record.seq} was modified")
                hashes[record.seq] = record.hash
                prev_hash, expected_seq = record.hash, record.seq + 1
                report.records += 1
                report.last_seq = record.seq
            after = batch[-1].seq
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        seals = conn.execute(select(audit_seals).order_by(audit_seals.c.seq)).all()

    if head.seq != report.last_seq or (head.seq and head.hash != prev_hash):
        report.problems.append(f"the chain ends at record {report.last_seq} but its head says {head.seq}: "
                               "records were cut off or added behind its back")
    for seal in seals:
        report.seals += 1
        try:
            public_key = keys.public_key(seal.key_id)
            _verify(public_key, seal.signature, seal_message(seal.seq, seal.hash))
        except Exception as exc:  # a seal that cannot be checked is a finding, whatever the cause
            report.problems.append(f"the seal at record {seal.seq} does not verify ({type(exc).__name__})")
            continue
        if seal.seq not in hashes:
            report.problems.append(f"record {seal.seq}, sealed, is missing: the log was cut off")
        elif hashes[seal.seq] != seal.hash:
            report.problems.append(f"record {seal.seq} differs from what was sealed")
        else:
            report.sealed_seq = max(report.sealed_seq, seal.seq)
    return report


def _verify(public_key, signature: bytes, message: bytes) -> None:
    public_key.verify(signature, message, ec.ECDSA(SignatureAlgorithm.ECDSA_SHA256.hash.cryptography_hash))
