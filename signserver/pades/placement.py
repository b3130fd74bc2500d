"""Where the stamp goes: the signature field to sign, and its rectangle on the page as a reader
sees it.

A caller places the stamp in points from the bottom-left corner of the page as displayed: the
page's visible box (its CropBox, clipped to its MediaBox) after the page's /Rotate. Real pages
seldom have the simple geometry that coordinates taken as-is assume: imposed, cropped and scanned
output has a MediaBox that does not start at 0,0 or a CropBox inset inside it, and a landscape
page is often a portrait page turned by /Rotate. So the rectangle is mapped here into the page's
own (unrotated) space, and on a turned page the appearance is turned back by its form XObject's
/Matrix (ISO 32000-1 12.5.5) so that its text reads upright where the reader looks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.content import AnnotAppearances
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import BoxConstraints
from pyhanko.sign import fields

from signserver.errors import InvalidArgument
from signserver.pades.page_tree import MAX_PAGE_TREE_DEPTH
from signserver.pades.stamp import StampOptions

# A page without a usable MediaBox is shown as US Letter by most readers.
_LETTER = (0.0, 0.0, 612.0, 792.0)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PageGeometry:
    """What a reader shows of a page: its visible box in the page's own space, and the
    clockwise turn (0, 90, 180 or 270 degrees) the reader applies to it."""

    visible: Box
    rotation: int = 0

    @property
    def displayed_size(self) -> tuple[float, float]:
        """Width and height of the page as displayed, in points."""
        x1, y1, x2, y2 = self.visible
        width, height = x2 - x1, y2 - y1
        return (height, width) if self.rotation in (90, 270) else (width, height)

    def to_page_space(self, rect: Box) -> Box:
        """The page-space rectangle that is displayed at ``rect`` (points from the displayed
        bottom-left corner)."""
        corners = [self._point(u, v) for u, v in ((rect[0], rect[1]), (rect[2], rect[3]))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def _point(self, u: float, v: float) -> tuple[float, float]:
        # Turning the page clockwise by the rotation brings the corner listed first to the
        # displayed bottom-left; u runs along the displayed bottom edge, v up the left edge.
        x1, y1, x2, y2 = self.visible
        if self.rotation == 90:
            return x2 - v, y1 + u
        if self.rotation == 180:
            return x2 - u, y2 - v
        if self.rotation == 270:
            return x1 + v, y2 - u
        return x1 + u, y1 + v


@dataclass(frozen=True)
class FieldPlacement:
    """The field to sign, the new field to create (None for an existing field), and the
    rotation of the page it is on (the appearance is turned to match)."""

    name: str
    new_field: fields.SigFieldSpec | None
    rotation: int = 0


def place_field(writer: IncrementalPdfFileWriter, options: StampOptions) -> FieldPlacement:
    """The field to sign: an existing empty one by name, or a new one on a page, at a rectangle
    given in points from the bottom-left corner of the page as displayed.

    Raises: InvalidArgument: the named field is already signed, the page is out of range, or the
        rectangle is empty or not inside the page as displayed.
    """
    existing = {name: (value, ref) for name, value, ref in fields.enumerate_sig_fields(writer.prev)}
    if options.field_name and options.field_name in existing:
        value, reference = existing[options.field_name]
        if value is not None:
            raise InvalidArgument(f"the signature field {options.field_name!r} is already signed")
        return FieldPlacement(options.field_name, None, _field_rotation(reference))
    pages = int(writer.root["/Pages"]["/Count"])
    page = options.page if options.page >= 0 else pages + options.page
    if not 0 <= page < pages:
        raise InvalidArgument(f"page {options.page} is out of range: the document has {pages} page(s)")
    name = options.field_name or f"Signature{len(existing) + 1}"
    if not options.visible:
        return FieldPlacement(name, fields.SigFieldSpec(sig_field_name=name))
    x1, y1, x2, y2 = options.box
    if not (x1 < x2 and y1 < y2):
        raise InvalidArgument("the stamp rectangle needs x1 < x2 and y1 < y2")
    page_ref, _ = writer.find_page_for_modification(page)
    geometry = page_geometry(page_ref.get_object())
    width, height = geometry.displayed_size
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InvalidArgument(f"the stamp rectangle {tuple(options.box)} is off the page: it must lie within "
                              f"0,0,{width:g},{height:g} (points from the bottom-left corner of the page as "
                              "displayed)")
    spec = fields.SigFieldSpec(sig_field_name=name, on_page=page, box=geometry.to_page_space((x1, y1, x2, y2)))
    return FieldPlacement(name, spec, geometry.rotation)


def page_geometry(page: generic.DictionaryObject) -> PageGeometry:
    """The page's visible box (CropBox clipped to MediaBox, both inheritable) and rotation."""
    media = _box(_inherited(page, "/MediaBox")) or _LETTER
    crop = _box(_inherited(page, "/CropBox"))
    visible = media
    if crop is not None:
        clipped = (max(media[0], crop[0]), max(media[1], crop[1]), min(media[2], crop[2]), min(media[3], crop[3]))
        # A CropBox that misses the MediaBox altogether is ignored, as readers do.
        visible = clipped if clipped[0] < clipped[2] and clipped[1] < clipped[3] else media
    return PageGeometry(visible, _rotation(_inherited(page, "/Rotate")))


def _inherited(page: generic.DictionaryObject, key: str):
    """``key`` from the page or the nearest page tree node above it (a bounded climb: a
    /Parent chain may loop); None when absent."""
    node = page
    for _ in range(MAX_PAGE_TREE_DEPTH + 1):
        if not isinstance(node, generic.DictionaryObject):
            return None
        if key in node:
            try:
                return node[key]
            except (KeyError, TypeError):
                return None
        try:
            node = node["/Parent"] if "/Parent" in node else None
        except (KeyError, TypeError):
            return None
    return None


def _box(value) -> Box | None:
    """A rectangle array as (left, bottom, right, top), corners in any order; None if not one."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 4:
        return None
    left, right = sorted(numbers[0::2])
    bottom, top = sorted(numbers[1::2])
    return (left, bottom, right, top) if left < right and bottom < top else None


def _rotation(value) -> int:
    """/Rotate as 0, 90, 180 or 270; a value that is not a multiple of 90 is ignored, as
    poppler and MuPDF do."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value % 90:
        return 0
    return int(value) % 360


def _field_rotation(field_ref) -> int:
    """The rotation of the page an existing field's widget is on (0 if it does not say)."""
    try:
        field = field_ref.get_object()
        widget = field["/Kids"][0].get_object() if "/Kids" in field else field
        page = widget["/P"] if "/P" in widget else None
    except (KeyError, IndexError, TypeError, AttributeError):
        return 0
    if not isinstance(page, generic.DictionaryObject):
        return 0
    return page_geometry(page).rotation


def upright(style, rotation: int):
    """``style`` (a pyHanko stamp style), turned so that its stamp reads upright on a page the
    reader turns clockwise by ``rotation`` degrees; ``style`` itself when the page is not turned."""
    return _UprightStampStyle(style, rotation) if rotation else style


class _UprightStampStyle:
    """A stamp style that lays out the stamp in the box as displayed (width and height swapped
    on a quarter turn) and turns its appearance back by the page's rotation."""

    def __init__(self, style, rotation: int):
        self._style = style
        self._rotation = rotation

    def create_stamp(self, writer, box: BoxConstraints, text_params: dict):
        if self._rotation in (90, 270):
            box = BoxConstraints(width=box.height, height=box.width)
        stamp = self._style.create_stamp(writer, box, text_params)
        return None if stamp is None else _TurnedAppearance(stamp, self._rotation)


# Counter-clockwise by the page's clockwise display turn: [cos a, sin a, -sin a, cos a, 0, 0].
_MATRICES = {90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}


class _TurnedAppearance:
    """A stamp whose form XObject carries a /Matrix: the reader fits the turned bounding box
    into the widget's /Rect, so no translation is needed."""

    def __init__(self, stamp, rotation: int):
        self._stamp = stamp
        self._rotation = rotation

    def apply_appearance(self, annot_dict: generic.DictionaryObject) -> None:
        form = self._stamp.as_form_xobject()
        a, b, c, d = _MATRICES[self._rotation]
        form[generic.pdf_name("/Matrix")] = generic.ArrayObject(
            [generic.NumberObject(n) for n in (a, b, c, d, 0, 0)])
        reference = self._stamp.writer.add_object(form)
        annot_dict["/AP"] = AnnotAppearances(normal=reference).as_pdf_object()
        if "/AS" in annot_dict:
            del annot_dict["/AS"]
