"""The reference registry's face comparison: deterministic, and real enough to tell photos apart.

Both photos are decoded with Pillow, turned upright (EXIF orientation), reduced to 32x32 grey
pixels and compared by normalised (Pearson) correlation; a negative correlation scores 0. The same
photo, re-encoded, cropped a little or made brighter, scores close to 1; an unrelated photo scores
low. It is no face recogniser: it stands in for the government's face service in development and
tests, behind the same contract.
"""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

# The media types the contract accepts, with the Pillow format each one must decode as.
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/tiff": "TIFF"}
MAX_PHOTO_BYTES = 10 * 1024 * 1024
# A decoded image beyond this is refused before its pixels are read (a decompression bomb).
MAX_PIXELS = 40_000_000
SIDE = 32


class PhotoRejected(ValueError):
    """The photo cannot be compared: the sentence says why (it is shown to the caller)."""


def face_signature(photo: bytes, media_type: str) -> tuple[float, ...]:
    """The photo as SIDE*SIDE grey levels, centred and scaled to unit length (all zeros for a
    photo of one flat colour).

    Raises: PhotoRejected: an unknown media type, an empty or oversized photo, content that does
    not decode as its media type says, or an image too large to decode.
    """
    expected = FORMATS.get(media_type.lower())
    if expected is None:
        raise PhotoRejected(f"media type {media_type!r} is not one of {', '.join(FORMATS)}")
    if not photo:
        raise PhotoRejected("the photo is empty")
    if len(photo) > MAX_PHOTO_BYTES:
        raise PhotoRejected(f"the photo is larger than {MAX_PHOTO_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(photo)) as image:
                if image.format != expected:
                    raise PhotoRejected(f"the content is {image.format or 'unknown'}, not {media_type}")
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PhotoRejected(f"the image has more than {MAX_PIXELS} pixels")
                upright = ImageOps.exif_transpose(image)
                small = upright.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=3.0)
                levels = [float(v) for v in small.tobytes()]
    except PhotoRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoRejected(f"the image has more than {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # Pillow's decoders raise a variety of errors on damaged files; none of them is ours.
        raise PhotoRejected(f"the photo cannot be decoded as {media_type}: {type(exc).__name__}") from None
    mean = sum(levels) / len(levels)
    centred = [v - mean for v in levels]
    norm = math.sqrt(sum(v * v for v in centred))
    if norm == 0.0:
        return tuple(0.0 for _ in centred)
    return tuple(v / norm for v in centred)


def similarity(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    """The correlation of two signatures, clipped to 0..1 and rounded to 4 places."""
    correlation = sum(a * b for a, b in zip(first, second, strict=True))
    return round(min(1.0, max(0.0, correlation)), 4)
