"""The reference registry's identities, read from a fixture file (TOML).

The file holds ``[[identity]]`` tables with the fields of the contract's lookup answer and a
``photo``: the path of the identity's reference photo, relative to the fixture file (see
``fixtures/registry.toml``). Photos are read and reduced once, at start.
"""

from __future__ import annotations

import datetime
import mimetypes
import tomllib
from dataclasses import dataclass
from pathlib import Path

from signserver.registry_dev.faces import PhotoRejected, face_signature

TEXT_FIELDS = ("id_type", "id_number", "name", "given_name", "surname", "issuing_region")
DATE_FIELDS = ("birth_date", "expires")
PHOTO_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                     ".tif": "image/tiff", ".tiff": "image/tiff"}


class FixtureError(ValueError):
    """The fixture file cannot be used: the sentence names the file and the entry."""


@dataclass(frozen=True)
class Identity:
    """One identity document the registry knows, with its reference photo's face signature."""

    id_type: str
    id_number: str
    name: str
    given_name: str
    surname: str
    birth_date: datetime.date
    expires: datetime.date
    issuing_region: str
    face: tuple[float, ...]

    def as_json(self) -> dict[str, str]:
        """The contract's lookup answer."""
        answer = {field: getattr(self, field) for field in TEXT_FIELDS}
        answer.update({field: getattr(self, field).isoformat() for field in DATE_FIELDS})
        return answer


def load_identities(path: Path) -> dict[tuple[str, str], Identity]:
    """The identities of the fixture file ``path``, by (id_type, id_number).

    Raises: FixtureError: the file is unreadable or not TOML, an entry lacks a field or has one of
    the wrong type, two entries share a document, or a photo is missing or cannot be decoded.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"{path}: {exc}") from None
    entries = document.get("identity")
    if not isinstance(entries, list) or not entries:
        raise FixtureError(f"{path}: no [[identity]] entries")
    identities: dict[tuple[str, str], Identity] = {}
    for index, entry in enumerate(entries, start=1):
        identity = _identity(path, index, entry)
        key = (identity.id_type, identity.id_number)
        if key in identities:
            raise FixtureError(f"{path}: identity {index} repeats {identity.id_type} {identity.id_number}")
        identities[key] = identity
    return identities


def _identity(path: Path, index: int, entry: object) -> Identity:
    where = f"{path}: identity {index}"
    if not isinstance(entry, dict):
        raise FixtureError(f"{where} is not a table")
    values: dict[str, object] = {}
    for field in TEXT_FIELDS:
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            raise FixtureError(f"{where}: {field} must be a non-empty string")
        values[field] = value
    for field in DATE_FIELDS:
        value = entry.get(field)
        if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
            raise FixtureError(f"{where}: {field} must be a date (YYYY-MM-DD, unquoted)")
        values[field] = value
    photo = entry.get("photo")
    if not isinstance(photo, str) or not photo:
        raise FixtureError(f"{where}: photo must be a path relative to the fixture file")
    photo_path = path.parent / photo
    media_type = PHOTO_MEDIA_TYPES.get(photo_path.suffix.lower()) or mimetypes.guess_type(photo_path.name)[0] or ""
    try:
        face = face_signature(photo_path.read_bytes(), media_type)
    except OSError as exc:
        raise FixtureError(f"{where}: photo {photo_path}: {exc.strerror or exc}") from None
    except PhotoRejected as exc:
        raise FixtureError(f"{where}: photo {photo_path}: {exc}") from None
    return Identity(face=face, **values)  # type: ignore[arg-type]
