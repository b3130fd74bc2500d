"""What PDF/A asks of the objects signing adds to a document, beyond its metadata
(signserver.pades.metadata): the stamp font's list of the glyphs it holds."""

from __future__ import annotations


def cids_in_program(charset: list[str], raw_glyph_ids: bool) -> list[int]:
    """The CIDs a CFF font program holds, from its charset: ``cidNNNNN`` names in a CID-keyed
    font (``.notdef`` is CID 0), or the glyph indexes of a name-keyed one that is used by them."""
    if raw_glyph_ids:
        return list(range(len(charset)))
    return [0 if name == ".notdef" else int(name[3:]) for name in charset]


def cid_set(cids: list[int]) -> bytes:
    """A /CIDSet stream's bytes (ISO 19005-1 6.3.5, ISO 32000-1 9.8.3): one bit per CID from 0
    to the largest present, the high-order bit of the first byte for CID 0, set where the font
    program holds that CID."""
    bits = bytearray(max(cids, default=0) // 8 + 1)
    for cid in cids:
        bits[cid // 8] |= 0x80 >> (cid % 8)
    return bytes(bits)
