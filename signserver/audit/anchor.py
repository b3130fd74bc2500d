"""Where the live audit chain starts: at the genesis, or after the records a prune removed.

A prune (see :mod:`signserver.audit.pruning`) removes records that an export wrote to a file, up to
a sealed record. The live chain then starts after that record: its hash is the ``prev_hash`` of the
first record left, and the seal that sealed it stays in ``audit_seals`` as the first link of the
seal chain. The anchor is kept twice: in ``audit_anchor`` (read before a walk) and in the chain
itself as an ``audit.pruned`` record, sealed like any other, which verification compares with the
row: whoever moves the row to hide removed records cannot also rewrite the sealed record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, select

from signserver.audit.seal import SERVER_STARTED, SERVER_STOPPED
from signserver.store.schema import audit_anchor

ANCHOR_ROW = 1
PRUNED_EVENT = "audit.pruned"
EXPORTED_EVENT = "audit.exported"
LIFECYCLE_EVENTS = (SERVER_STARTED, SERVER_STOPPED)


@dataclass(frozen=True)
class Lifecycle:
    """The newest ``server.started`` or ``server.stopped`` record at some point of the chain."""

    seq: int
    event: str

    @property
    def stopped(self) -> bool:
        return self.event == SERVER_STOPPED

    @classmethod
    def of(cls, seq: int | None, event: str | None) -> "Lifecycle | None":
        return cls(seq, event) if seq is not None and event is not None else None


@dataclass(frozen=True)
class Anchor:
    """Records up to ``seq`` were removed; seal ``seal_number`` sealed record ``seq``."""

    seq: int
    hash: str
    seal_number: int
    seal_digest: str
    lifecycle: Lifecycle | None
    export_sha256: str

    def record_detail(self) -> dict:
        """What the ``audit.pruned`` record of this anchor holds."""
        return {"until": self.seq, "hash": self.hash, "seal": self.seal_number, "seal_digest": self.seal_digest,
                "lifecycle": asdict(self.lifecycle) if self.lifecycle else None, "export_sha256": self.export_sha256}

    @classmethod
    def from_record_detail(cls, detail: str) -> "Anchor":
        """Raises: ValueError: not the detail of an ``audit.pruned`` record."""
        try:
            fields = json.loads(detail)
            lifecycle = fields["lifecycle"]
            return cls(seq=int(fields["until"]), hash=str(fields["hash"]), seal_number=int(fields["seal"]),
                       seal_digest=str(fields["seal_digest"]),
                       lifecycle=Lifecycle(int(lifecycle["seq"]), str(lifecycle["event"])) if lifecycle else None,
                       export_sha256=str(fields["export_sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("not the detail of an audit.pruned record") from exc


def start_problem(anchor: Anchor | None, pruned: Anchor | None) -> str | None:
    """What is wrong with where the live chain starts (``anchor``, the row; None: the genesis),
    given the newest ``audit.pruned`` record of the chain (``pruned``; None: there is none), or
    None when they agree."""
    if anchor is None:
        if pruned is not None:
            return (f"the log says records up to {pruned.seq} were removed, but it starts at the first record: "
                    "where it starts was altered")
        return None
    if pruned is None:
        return (f"the log starts after record {anchor.seq} but no {PRUNED_EVENT} record says those were removed: "
                "records were removed behind its back")
    if pruned != anchor:
        return (f"the newest {PRUNED_EVENT} record says records up to {pruned.seq} were removed, but the log starts "
                f"after record {anchor.seq}: where it starts was altered")
    return None


def read_anchor(conn: Connection) -> Anchor | None:
    """The anchor of the live chain, or None when no record was ever removed.

    Raises: nothing of its own; the database's errors end the caller's transaction (StoreUnavailable).
    """
    row = conn.execute(select(audit_anchor).where(audit_anchor.c.id == ANCHOR_ROW)).first()
    if row is None:
        return None
    return Anchor(seq=row.seq, hash=row.hash, seal_number=row.seal_number, seal_digest=row.seal_digest,
                  lifecycle=Lifecycle.of(row.lifecycle_seq, row.lifecycle_event), export_sha256=row.export_sha256)
