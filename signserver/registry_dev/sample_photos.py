"""Drawing the sample fixture's portraits: ``python -m signserver.registry_dev.sample_photos DIR``.

Each portrait is drawn from a seed (a smooth random backdrop, a head, eyes and a mouth placed by
the seed), so the same seed always gives the same pixels and different seeds give photos that the
reference face comparison tells apart. The shipped files under ``fixtures/photos`` were made by it.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 96


def portrait(seed: int) -> Image.Image:
    """A small RGB portrait, the same for the same seed."""
    rng = random.Random(seed)
    # A backdrop of a few coarse random shades, smoothed: most of what tells two photos apart.
    coarse = Image.new("L", (6, 6))
    coarse.putdata([rng.randrange(256) for _ in range(36)])
    backdrop = coarse.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    tint = tuple(rng.randrange(120, 256) for _ in range(3))
    image = Image.merge("RGB", [backdrop.point(lambda v, t=t: v * t // 255) for t in tint])
    draw = ImageDraw.Draw(image)
    cx, cy = SIZE // 2 + rng.randrange(-14, 15), SIZE // 2 + rng.randrange(-8, 9)
    rx, ry = rng.randrange(18, 26), rng.randrange(24, 32)
    skin = tuple(rng.randrange(150, 240) for _ in range(3))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    hair = tuple(rng.randrange(0, 90) for _ in range(3))
    draw.chord((cx - rx, cy - ry, cx + rx, cy + ry), 180, 360, fill=hair)
    eye_y, eye_dx = cy + rng.randrange(-2, 5), rng.randrange(6, 11)
    for ex in (cx - eye_dx, cx + eye_dx):
        draw.ellipse((ex - 3, eye_y - 2, ex + 3, eye_y + 2), fill=(30, 30, 30))
    mouth_y = cy + ry // 2 + rng.randrange(0, 5)
    draw.line((cx - rx // 3, mouth_y, cx + rx // 3, mouth_y), fill=(120, 40, 40), width=2)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def main(argv: list[str]) -> int:
    """Write the sample fixture's three portraits into the folder ``argv[0]``."""
    folder = Path(argv[0]) if argv else Path(__file__).parent / "fixtures" / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    portrait(1501).save(folder / "kuan-weng-sam.png", optimize=True)
    portrait(1502).save(folder / "chan-tai-man.jpg", quality=85)
    portrait(1503).save(folder / "maria-silva.png", optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
