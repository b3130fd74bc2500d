"""Finding a page in a PDF's page tree without trusting the tree.

A page tree comes from the caller and may loop back on itself or nest far deeper than any real
document: the walk keeps the nodes it has passed through and stops at a fixed depth, where
pyHanko's own walk recurses once per level (a 2,000-level tree exhausts Python's stack) and
notices a loop only on its second turn. The last page (where stamps go by default) is found from
the end of the tree: walking from the front parses every page before the one looked for, 5 ms on
a 50-page document.
"""

from __future__ import annotations

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfError, PdfReadError

# Two kids a node over 64 levels hold 2^64 pages: no real document comes near.
MAX_PAGE_TREE_DEPTH = 64


def walk_page_tree(root: generic.DictionaryObject, page_ix: int, retrieve_parent: bool):
    """Find page ``page_ix`` (negative: from the end) under the catalogue ``root``, as pyHanko's
    ``_walk_page_tree`` does.

    Returns: with ``retrieve_parent``, the page's parent node (a reference), the page's index among
    its kids and the resources it inherits; else the page (a reference) and its resources.

    Raises:
        PdfError: the index is outside the document.
        PdfReadError: the tree loops, is deeper than MAX_PAGE_TREE_DEPTH, or is malformed (a kid
            that is not an indirect reference, a node without a page count).
    """
    node_ref = root.raw_get("/Pages")
    if not isinstance(node_ref, generic.IndirectObject):
        raise PdfReadError("the catalogue's /Pages is not an indirect reference")
    node = _node(node_ref)
    count = _page_count(node)
    if page_ix < 0:
        page_ix += count
    if not 0 <= page_ix < count:
        raise PdfError("Page index out of range")
    from_the_end = page_ix == count - 1
    resources = generic.DictionaryObject()
    first_page = 0  # the index of the first page under ``node``
    passed = {node_ref.reference}
    for _ in range(MAX_PAGE_TREE_DEPTH):
        resources = node.raw_get("/Resources") if "/Resources" in node else resources
        kids = _entry(node, "/Kids")
        if not isinstance(kids, generic.ArrayObject):
            raise PdfReadError("a page tree node has no /Kids array")
        order = reversed(range(len(kids))) if from_the_end else range(len(kids))
        for kid_index in order:
            kid_ref = kids.raw_get(kid_index)
            if not isinstance(kid_ref, generic.IndirectObject):
                raise PdfReadError("Page tree node children must be indirect objects")
            if kid_ref.reference in passed:
                raise PdfReadError("the page tree loops back on itself")
            kid = _node(kid_ref)
            kind = _entry(kid, "/Type")
            if kind == "/Page":
                if from_the_end or first_page == page_ix:
                    if retrieve_parent:
                        return node_ref, kid_index, resources
                    return kid_ref, kid.raw_get("/Resources") if "/Resources" in kid else resources
                first_page += 1
            elif kind == "/Pages":
                pages_below = _page_count(kid)
                if (pages_below > 0) if from_the_end else (first_page <= page_ix < first_page + pages_below):
                    node_ref, node = kid_ref, kid
                    passed.add(kid_ref.reference)
                    break
                first_page += pages_below
        else:
            raise PdfReadError("Page not found")
    raise PdfReadError(f"the page tree is nested deeper than {MAX_PAGE_TREE_DEPTH} levels")


def _node(reference: generic.IndirectObject) -> generic.DictionaryObject:
    """Raises: PdfReadError: the reference does not lead to a dictionary."""
    value = reference.get_object()
    if not isinstance(value, generic.DictionaryObject):
        raise PdfReadError("a page tree node is not a dictionary")
    return value


def _entry(dictionary: generic.DictionaryObject, key: str):
    """The value of ``key``, indirect references resolved; None when absent or null."""
    try:
        return dictionary[key]
    except KeyError:
        return None


def _page_count(node: generic.DictionaryObject) -> int:
    """Raises: PdfReadError: no /Count, or not a whole number."""
    count = _entry(node, "/Count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise PdfReadError("a page tree node has no valid /Count")
    return int(count)


def page_holding(root: generic.DictionaryObject, annotation: generic.IndirectObject):
    """The page whose /Annots lists ``annotation`` (a reference), for a widget that does not name
    its page (/P is optional, ISO 32000-1 12.5.2); None if no page does or the tree cannot be
    read. A walk that passes each node once and goes no deeper than MAX_PAGE_TREE_DEPTH; a
    malformed node or /Annots is passed over, as readers pass it over."""
    wanted = annotation.reference
    try:
        top = root.raw_get("/Pages")
    except (KeyError, TypeError, AttributeError):
        return None
    passed: set = set()
    pending = [(top, 0)]
    while pending:
        node_ref, depth = pending.pop()
        if not isinstance(node_ref, generic.IndirectObject) or node_ref.reference in passed:
            continue
        passed.add(node_ref.reference)
        try:
            node = node_ref.get_object()
            if not isinstance(node, generic.DictionaryObject):
                continue
            kind = _entry(node, "/Type")
            if kind == "/Page" or (kind != "/Pages" and "/Kids" not in node):
                if _lists(_entry(node, "/Annots"), wanted):
                    return node
                continue
            kids = _entry(node, "/Kids")
        except (PdfError, KeyError, TypeError, ValueError):
            continue
        if isinstance(kids, generic.ArrayObject) and depth < MAX_PAGE_TREE_DEPTH:
            # Reversed onto the stack: the pages are looked at in their order.
            pending.extend((kids.raw_get(i), depth + 1) for i in reversed(range(len(kids))))
    return None


def _lists(annots, wanted) -> bool:
    """Whether ``annots`` is an array holding a reference to the object ``wanted``."""
    if not isinstance(annots, generic.ArrayObject):
        return False
    return any(isinstance(item, generic.IndirectObject) and item.reference == wanted
               for item in (annots.raw_get(i) for i in range(len(annots))))
