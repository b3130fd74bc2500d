"""Where the stamp goes: the signature field to sign, and its rectangle on the page as a reader
sees it.

A caller places the stamp in points from the bottom-left corner of the page as displayed: the
page's visible box (its CropBox, clipped to its MediaBox) after the page's /Rotate. Real pages
seldom have the simple geometry that coordinates taken as-is assume: imposed, cropped and scanned
output has a MediaBox that does not start at 0,0 or a CropBox inset inside it, and a landscape
page is often a portrait page turned by /Rotate. So the rectangle is mapped here into the page's
own (unrotated) space, and on a turned page the appearance is turned back by its form XObject's
/Matrix (ISO 32000-1 12.5.5) so that its text reads upright where the reader looks for it. A page
with a /UserUnit (ISO 32000-1 14.11.2.2, used by large drawings) counts that many points to its
unit: the rectangle is divided by it, and the stamp is laid out in points, in an appearance box
the reader scales into the widget (ISO 32000-1 12.5.5 again), so that it shows as asked.
"""

from __future__ import annotations

import decimal
import numbers
from dataclasses import dataclass

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.content import AnnotAppearances
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import BoxConstraints
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields

from signserver.errors import InvalidArgument
from signserver.pades.page_tree import MAX_PAGE_TREE_DEPTH, page_holding
from signserver.pades.stamp import BOX_FIELD, FIELD_NAME_FIELD, PAGE_FIELD, StampOptions

# A page without a usable MediaBox is shown as US Letter by most readers.
_LETTER = (0.0, 0.0, 612.0, 792.0)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PageGeometry:
    """What a reader shows of a page: its visible box in the page's own space, the clockwise
    turn (0, 90, 180 or 270 degrees) the reader applies to it, and how many points its unit is."""

    visible: Box
    rotation: int = 0
    user_unit: float = 1.0

    @property
    def displayed_size(self) -> tuple[float, float]:
        """Width and height of the page as displayed, in points."""
        x1, y1, x2, y2 = self.visible
        width, height = (x2 - x1) * self.user_unit, (y2 - y1) * self.user_unit
        return (height, width) if self.rotation in (90, 270) else (width, height)

    def to_page_space(self, rect: Box) -> Box:
        """The page-space rectangle that is displayed at ``rect`` (points from the displayed
        bottom-left corner)."""
        unit = self.user_unit
        corners = [self._point(u / unit, v / unit) for u, v in ((rect[0], rect[1]), (rect[2], rect[3]))]
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
    rotation and unit of the page it is on (the appearance is turned and scaled to match)."""

    name: str
    new_field: fields.SigFieldSpec | None
    rotation: int = 0
    user_unit: float = 1.0


def place_field(writer: IncrementalPdfFileWriter, options: StampOptions) -> FieldPlacement:
    """The field to sign: an existing empty one by name, or a new one on a page, at a rectangle
    given in points from the bottom-left corner of the page as displayed.

    Raises: InvalidArgument: a signature field's value is no signature dictionary (the document
        is damaged), the named field is already signed or is a form field of another type (or
        under one), the page is out of range, or the rectangle is empty or not inside the page as
        displayed.
    """
    existing = {name: (value, ref) for name, value, ref in fields.enumerate_sig_fields(writer.prev)}
    # pyHanko takes a field whose /V is set (not null, 0 or empty) as signed, and reading the
    # signature of one that is no dictionary fails: verification refuses the document as damaged.
    for value, _ in existing.values():
        value = value.get_object() if isinstance(value, generic.IndirectObject) else value
        if value and not isinstance(value, generic.DictionaryObject):
            raise InvalidArgument("the document is damaged: a signature field's value is not a signature dictionary")
    if options.field_name and options.field_name in existing:
        value, reference = existing[options.field_name]
        if value is not None:
            raise InvalidArgument(f"the signature field {options.field_name!r} is already signed",
                                  field=FIELD_NAME_FIELD)
        geometry = _field_geometry(writer.prev.root, reference)
        return FieldPlacement(options.field_name, None, geometry.rotation, geometry.user_unit)
    form = form_fields(writer.prev.root)
    if options.field_name:
        _refuse_taken_name(options.field_name, form)
    pages = int(writer.root["/Pages"]["/Count"])
    page = options.page if options.page >= 0 else pages + options.page
    if not 0 <= page < pages:
        # Said as the caller numbers pages: from 1, or from -1 for the last (the options count from 0).
        asked = options.page + 1 if options.page >= 0 else options.page
        raise InvalidArgument(f"page {asked} is out of range: the document has {pages} page(s)", field=PAGE_FIELD)
    name = options.field_name or _free_name(form, len(existing) + 1)
    if not options.visible:
        return FieldPlacement(name, fields.SigFieldSpec(sig_field_name=name))
    x1, y1, x2, y2 = options.box
    if not (x1 < x2 and y1 < y2):
        raise InvalidArgument("the stamp rectangle needs x1 < x2 and y1 < y2", field=BOX_FIELD)
    page_ref, _ = writer.find_page_for_modification(page)
    geometry = page_geometry(page_ref.get_object())
    width, height = geometry.displayed_size
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InvalidArgument(f"the stamp rectangle {tuple(options.box)} is off the page: it must lie within "
                              f"0,0,{width:g},{height:g} (points from the bottom-left corner of the page as "
                              "displayed)", field=BOX_FIELD)
    spec = fields.SigFieldSpec(sig_field_name=name, on_page=page, box=geometry.to_page_space((x1, y1, x2, y2)))
    return FieldPlacement(name, spec, geometry.rotation, geometry.user_unit)


@dataclass(frozen=True)
class FormField:
    """A field of the document's form, by its fully qualified name: its type (/FT, inherited;
    None for a group that states none) and whether it is a group (other fields hang under it)."""

    field_type: object
    group: bool = False


_KINDS = {"/Tx": "text", "/Btn": "button", "/Ch": "choice", "/Sig": "signature"}


def form_fields(root: generic.DictionaryObject) -> dict[str, FormField]:
    """Every field of the form (ISO 32000-1 12.7.3), groups included, by fully qualified name.
    A bounded walk: a field tree may loop or nest past any real form's, and a malformed entry is
    passed over, as pyHanko passes it over."""
    try:
        form = root.get("/AcroForm")
        form = form.get_object() if form is not None else None
        top = form.get("/Fields") if isinstance(form, generic.DictionaryObject) else None
    except (KeyError, TypeError, AttributeError):
        return {}
    found: dict[str, FormField] = {}
    seen: set = set()
    pending = [(top, "", None, 0)]
    while pending:
        kids, parent_name, parent_type, depth = pending.pop()
        kids = kids.get_object() if isinstance(kids, generic.IndirectObject) else kids
        if not isinstance(kids, generic.ArrayObject) or depth > MAX_PAGE_TREE_DEPTH:
            continue
        for reference in kids:
            if not isinstance(reference, generic.IndirectObject) or reference.reference in seen:
                continue
            seen.add(reference.reference)
            field = reference.get_object()
            if not isinstance(field, generic.DictionaryObject) or "/T" not in field:
                continue  # a widget of its parent, not a field
            name = f"{parent_name}.{field['/T']}" if parent_name else str(field["/T"])
            field_type = field.get("/FT", parent_type)
            found[name] = FormField(field_type)
            if parent_name in found:
                found[parent_name] = FormField(found[parent_name].field_type, group=True)
            if "/Kids" in field:
                pending.append((field["/Kids"], name, field_type, depth + 1))
    return found


def _refuse_taken_name(name: str, form: dict[str, FormField]) -> None:
    """Refuse a new signature field's name that a field of another type has, or whose parent
    (``a`` of ``a.b``) is a field of its own rather than a group.

    Raises: InvalidArgument: saying which field has the name, and of what type it is.
    """
    parts = name.split(".")
    for length in range(1, len(parts) + 1):
        prefix = ".".join(parts[:length])
        found = form.get(prefix)
        if found is None:
            continue
        if prefix == name:
            kind = _KINDS.get(found.field_type, "form")
            what = "names a group of form fields" if found.group else f"is a {kind} field"
            raise InvalidArgument(f"the form field {name!r} {what}, not a signature field: name an empty "
                                  "signature field, or a name no field of the document has", field=FIELD_NAME_FIELD)
        if not found.group:
            kind = _KINDS.get(found.field_type, "form")
            raise InvalidArgument(f"the signature field {name!r} cannot be made: {prefix!r} is a {kind} field, "
                                  "not a group of fields; choose another name", field=FIELD_NAME_FIELD)


def _free_name(form: dict[str, FormField], start: int) -> str:
    """The first of SignatureN, SignatureN+1, ... that no field of the form is named (a new
    field under a taken name would be the existing field, of whatever type)."""
    number = start
    while f"Signature{number}" in form:
        number += 1
    return f"Signature{number}"


def page_geometry(page: generic.DictionaryObject) -> PageGeometry:
    """The page's visible box (CropBox clipped to MediaBox, both inheritable), rotation and
    unit."""
    media = _box(_inherited(page, "/MediaBox")) or _LETTER
    crop = _box(_inherited(page, "/CropBox"))
    visible = media
    if crop is not None:
        clipped = (max(media[0], crop[0]), max(media[1], crop[1]), min(media[2], crop[2]), min(media[3], crop[3]))
        # A CropBox that misses the MediaBox altogether is ignored, as readers do.
        visible = clipped if clipped[0] < clipped[2] and clipped[1] < clipped[3] else media
    return PageGeometry(visible, _rotation(_inherited(page, "/Rotate")), _user_unit(page.get("/UserUnit")))


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
    if not _is_number(value) or value % 90:
        return 0
    return int(value) % 360


def _user_unit(value) -> float:
    """/UserUnit as a positive number of points; 1 when absent or not a positive number."""
    if not _is_number(value) or not 0 < value < float("inf"):
        return 1.0
    return float(value)


def _is_number(value) -> bool:
    """Whether ``value`` is a number: an integer, or a real as pyHanko reads one (a Decimal, which
    is no numbers.Real) or as Python computes one; a bool is none."""
    return isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool) and not (
        isinstance(value, decimal.Decimal) and not value.is_finite())


def _field_geometry(root: generic.DictionaryObject, field_ref) -> PageGeometry:
    """The geometry of the page an existing field's widget is on: the page its /P names, else
    the page whose /Annots lists it (/P is optional); an unturned Letter page of unit 1 if no
    page holds it."""
    try:
        field = field_ref.get_object()
        widget_ref = field["/Kids"].raw_get(0) if "/Kids" in field else field_ref
        widget = widget_ref.get_object()
        page = widget["/P"] if "/P" in widget else None
        if not isinstance(page, generic.DictionaryObject) and isinstance(widget_ref, generic.IndirectObject):
            page = page_holding(root, widget_ref)
    except (PdfError, KeyError, IndexError, TypeError, AttributeError):
        return PageGeometry(_LETTER)
    if not isinstance(page, generic.DictionaryObject):
        return PageGeometry(_LETTER)
    return page_geometry(page)


def upright(style, rotation: int, user_unit: float = 1.0):
    """``style`` (a pyHanko stamp style), laid out in points and turned so that its stamp reads
    upright on a page the reader turns clockwise by ``rotation`` degrees and whose unit is
    ``user_unit`` points; ``style`` itself on an unturned page of unit 1."""
    return _UprightStampStyle(style, rotation, user_unit) if rotation or user_unit != 1 else style


class _UprightStampStyle:
    """A stamp style that lays out the stamp in the box as displayed (in points, width and
    height swapped on a quarter turn) and turns its appearance back by the page's rotation. The
    reader fits the appearance's box into the widget's, in the page's units."""

    def __init__(self, style, rotation: int, user_unit: float = 1.0):
        self._style = style
        self._rotation = rotation
        self._user_unit = user_unit

    def create_stamp(self, writer, box: BoxConstraints, text_params: dict):
        width, height = box.width * self._user_unit, box.height * self._user_unit
        if self._rotation in (90, 270):
            width, height = height, width
        stamp = self._style.create_stamp(writer, BoxConstraints(width=width, height=height), text_params)
        if stamp is None or not self._rotation:
            return stamp
        return _TurnedAppearance(stamp, self._rotation)


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
