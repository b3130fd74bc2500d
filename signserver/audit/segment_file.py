"""The file of an audit segment: records and their seals, with what checking them alone needs.

JSON lines (gzip-compressed when the name ends in ``.gz``), written and read as streams:

1. the header: ``{"format": "signserver-audit-segment", "version": 1, "first_seq", "last_seq",
   "start": {"seq", "hash", "seal", "lifecycle", "anchor"}, "seal_keys": [{"public_key", "sha256",
   "first_seal"}], "exported_at"}``. ``start`` is where the segment's chain starts: the hash of the
   record before ``first_seq`` (the genesis hash for the first segment) and the seal that sealed
   it (absent for the first segment), so that the segment's first record and first seal are
   checked against something signed; ``lifecycle`` is the newest server start or stop before the
   segment, ``anchor`` the prune the live log had made there (both only explain the first seal
   gap, and the segment's own ``audit.pruned`` record is compared with ``anchor``);
   ``seal_keys`` are the pinned seal keys' public halves (PEM) and the first seal each made;
2. ``{"record": {...}}`` and ``{"seal": {...}}`` lines, each seal right after the record it seals;
3. ``{"end": {"records", "seals", "last_seq", "last_hash", "seal", "seal_digest"}}``: a file cut
   short has no end, or one that does not add up.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signserver.audit.anchor import Anchor, Lifecycle
from signserver.audit.log import AuditRecord
from signserver.audit.seal_format import SealContent
from signserver.audit.seal_key import PinnedKey, fingerprint
from signserver.errors import DataCorrupted

FORMAT = "signserver-audit-segment"
VERSION = 1


@dataclass(frozen=True)
class SealRow:
    """A seal as ``audit_seals`` holds it."""

    number: int
    seq: int
    hash: str
    at: int
    key_id: str
    signature: bytes
    format: int
    prev_seal: str

    @classmethod
    def of(cls, row) -> "SealRow":
        return cls(number=row.number, seq=row.seq, hash=row.hash, at=row.at, key_id=row.key_id,
                   signature=bytes(row.signature), format=row.format, prev_seal=row.prev_seal)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SealRow":
        """Raises: KeyError, TypeError, ValueError: not a seal."""
        return cls(number=_int(data["number"]), seq=_int(data["seq"]), hash=_str(data["hash"]), at=_int(data["at"]),
                   key_id=_str(data["key_id"]), signature=base64.b64decode(_str(data["signature"]), validate=True),
                   format=_int(data["format"]), prev_seal=_str(data["prev_seal"]))

    def digest(self) -> str:
        return SealContent.of_row(self).digest()


@dataclass(frozen=True)
class SegmentStart:
    seq: int
    hash: str
    seal: SealRow | None
    lifecycle: Lifecycle | None
    anchor: Anchor | None


@dataclass(frozen=True)
class SegmentHeader:
    first_seq: int
    last_seq: int
    start: SegmentStart
    seal_keys: tuple[PinnedKey, ...]
    exported_at: int


@dataclass(frozen=True)
class SegmentEnd:
    records: int
    seals: int
    last_seq: int
    last_hash: str
    seal: int
    seal_digest: str


class _HashingFile(io.RawIOBase):
    """Passes bytes on to a file, hashing them: the SHA-256 of the file as written."""

    def __init__(self, out: IO[bytes]):
        self._out = out
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        return self._out.write(data)


class SegmentWriter:
    """Writes one segment file (the header first, the end last)."""

    def __init__(self, raw: IO[bytes], compress: bool):
        self._hashing = _HashingFile(raw)
        self._out = gzip.GzipFile(fileobj=self._hashing, mode="wb", mtime=0) if compress else self._hashing
        self._compressed = compress

    def header(self, header: SegmentHeader) -> None:
        start = header.start
        pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        keys = [{"public_key": key.public_key.public_bytes(*pem).decode("ascii"), "sha256": key.fingerprint,
                 "first_seal": key.first_seal} for key in header.seal_keys]
        self._line({"format": FORMAT, "version": VERSION, "first_seq": header.first_seq, "last_seq": header.last_seq,
                    "start": {"seq": start.seq, "hash": start.hash,
                              "seal": start.seal.as_json() if start.seal else None,
                              "lifecycle": asdict(start.lifecycle) if start.lifecycle else None,
                              "anchor": start.anchor.record_detail() if start.anchor else None},
                    "seal_keys": keys, "exported_at": header.exported_at})

    def record(self, record: AuditRecord) -> None:
        self._line({"record": asdict(record)})

    def seal(self, seal: SealRow) -> None:
        self._line({"seal": seal.as_json()})

    def end(self, end: SegmentEnd) -> str:
        """Write the end and return the file's SHA-256 (hex)."""
        self._line({"end": asdict(end)})
        if self._compressed:
            self._out.close()  # writes gzip's trailer; the raw file stays open
        return self._hashing.sha256.hexdigest()

    def _line(self, value: dict) -> None:
        self._out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")


GZIP_MAGIC = b"\x1f\x8b"


def open_segment(path: Path) -> IO[bytes]:
    """The file's lines, decompressed when it is gzip-compressed: told by its first bytes, not
    its name, which a transfer that decompressed it (or dropped the ``.gz``) leaves behind.

    Raises: OSError.
    """
    raw = path.open("rb")
    try:
        compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if not compressed:
        return raw
    raw.close()
    return gzip.open(path, "rb")


def read_header(line: bytes) -> SegmentHeader:
    """Raises: DataCorrupted: not the header of a segment file this version reads."""
    try:
        data = json.loads(line)
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise DataCorrupted(f"not a {FORMAT} file of version {VERSION}")
        start = data["start"]
        lifecycle, anchor = start["lifecycle"], start["anchor"]
        lifecycle = Lifecycle(_int(lifecycle["seq"]), _str(lifecycle["event"])) if lifecycle else None
        return SegmentHeader(
            first_seq=_int(data["first_seq"]), last_seq=_int(data["last_seq"]),
            start=SegmentStart(seq=_int(start["seq"]), hash=_str(start["hash"]),
                               seal=SealRow.from_json(start["seal"]) if start["seal"] is not None else None,
                               lifecycle=lifecycle,
                               anchor=Anchor.from_record_detail(json.dumps(anchor)) if anchor else None),
            seal_keys=tuple(_pinned_key(key) for key in data["seal_keys"]), exported_at=_int(data["exported_at"]))
    except DataCorrupted:
        raise
    # RecursionError: JSON nested deeper than Python's reader goes.
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise DataCorrupted(f"the header is not that of a {FORMAT} file ({type(exc).__name__})") from None


def read_entry(line: bytes) -> tuple[str, AuditRecord | SealRow | SegmentEnd]:
    """One line after the header: ("record", record), ("seal", seal) or ("end", end).

    Raises: DataCorrupted: none of these.
    """
    try:
        data = json.loads(line)
        if "record" in data:
            fields = data["record"]
            return "record", AuditRecord(seq=_int(fields["seq"]), at=_int(fields["at"]), event=_str(fields["event"]),
                                         actor=_str(fields["actor"]), subject=_str(fields["subject"]),
                                         detail=_str(fields["detail"]), prev_hash=_str(fields["prev_hash"]),
                                         hash=_str(fields["hash"]))
        if "seal" in data:
            return "seal", SealRow.from_json(data["seal"])
        if "end" in data:
            fields = data["end"]
            return "end", SegmentEnd(records=_int(fields["records"]), seals=_int(fields["seals"]),
                                     last_seq=_int(fields["last_seq"]), last_hash=_str(fields["last_hash"]),
                                     seal=_int(fields["seal"]), seal_digest=_str(fields["seal_digest"]))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: nested too deep
        pass
    raise DataCorrupted("a line is neither a record, a seal nor the end")


def lines(handle: IO[bytes]) -> Iterator[bytes]:
    """The file's lines. Raises: DataCorrupted: the compressed stream is damaged."""
    try:
        yield from handle
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataCorrupted(f"the file cannot be read to its end: {exc}") from None


def _pinned_key(data: dict[str, Any]) -> PinnedKey:
    public_key = serialization.load_pem_public_key(_str(data["public_key"]).encode("ascii"))
    if not isinstance(public_key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise ValueError("not a key that seals")
    # The fingerprint is computed, never taken from the file.
    return PinnedKey(public_key, fingerprint(public_key), _int(data["first_seal"]))


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not a whole number")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value
