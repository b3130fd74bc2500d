"""VerifiedMark: the last seal an intact verification of a database reached, kept in the state
directory so that the next ``signserver audit verify`` walks only what came after it.

The mark holds what the walk needs to go on from that seal (its content, the lifecycle record
before it, the newest prune record, counts) and the pinned keys it was checked with: a mark made
with other keys, for another database, or unreadable, is ignored and the walk starts over. The
next walk checks that the seal is still in the database as it was. Records before the mark are
not read again: ``--full`` does. The file is as trustworthy as the pin beside it (whoever can
replace one can replace the other).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from sqlalchemy.engine import make_url

from signserver.audit.anchor import Anchor, Lifecycle
from signserver.audit.chain_check import Checkpoint, PinnedKeys
from signserver.audit.seal_format import SealContent

log = logging.getLogger(__name__)

VERSION = 1


def _database_name(url: str) -> str:
    """A name for the database that holds no password: the URL without it, hashed."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL still names its database
        shown = url.split("@")[-1]
    return hashlib.sha256(shown.encode("utf-8")).hexdigest()[:16]


def _fingerprints(pinned: PinnedKeys | None) -> list[str]:
    return [key.fingerprint for key in pinned.all] if pinned else []


class VerifiedMark:
    def __init__(self, state_dir: Path, database_url: str):
        self.path = state_dir / "audit" / f"verified-{_database_name(database_url)}.json"

    def load(self, pinned: PinnedKeys | None) -> Checkpoint | None:
        """The checkpoint of the last intact verification with these keys, or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable verification mark %s: %s", self.path, exc)
            return None
        if data.get("version") != VERSION or data.get("keys") != _fingerprints(pinned):
            return None
        try:
            lifecycle, pruned = data["lifecycle"], data["pruned"]
            return Checkpoint(seal=SealContent(**data["seal"]), excused=bool(data["excused"]),
                              lifecycle=Lifecycle(**lifecycle) if lifecycle else None,
                              chained_seen=bool(data["chained_seen"]),
                              pruned=Anchor.from_record_detail(json.dumps(pruned)) if pruned else None,
                              newest_seal_at=int(data["newest_seal_at"]), legacy_seals=int(data["legacy_seals"]),
                              predecessor_seals=int(data["predecessor_seals"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring the verification mark %s: %s", self.path, exc)
            return None

    def save(self, checkpoint: Checkpoint, pinned: PinnedKeys | None, verified_at: int) -> None:
        """Replace the mark atomically. A mark that cannot be written only costs the next run time."""
        data = {"version": VERSION, "keys": _fingerprints(pinned), "verified_at": verified_at,
                "seal": asdict(checkpoint.seal), "excused": checkpoint.excused,
                "lifecycle": asdict(checkpoint.lifecycle) if checkpoint.lifecycle else None,
                "chained_seen": checkpoint.chained_seen,
                "pruned": checkpoint.pruned.record_detail() if checkpoint.pruned else None,
                "newest_seal_at": checkpoint.newest_seal_at, "legacy_seals": checkpoint.legacy_seals,
                "predecessor_seals": checkpoint.predecessor_seals}
        temporary = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".verified-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("could not keep the verification mark %s: %s", self.path, exc)
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
