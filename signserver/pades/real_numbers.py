"""Real numbers written in PDF's own syntax: fixed-point, never with an exponent.

pyHanko keeps a real number (FloatObject) as a Decimal and writes it as ``str`` writes one: a
number below 1e-6 comes out as ``1E-8``. PDF has no exponents (ISO 32000-1, 7.3.3), so a page,
catalogue, Info or AcroForm dictionary that signing rewrites with such a number (read as
``0.00000001`` from the document) made the signed document unreadable, to the service's own
verification too. An integral real of more than 28 digits made pyHanko's writing fail outright
(its ``quantize`` runs out of the context's precision).

``install`` makes every real pyHanko writes in this process fixed-point: integral ones as
integers (as pyHanko writes them), others with all their digits. A real read from a document
has no exponent (pyHanko reads only ``+-.0-9``), so the text written is never longer than the
number's digits plus its exponent's worth of zeros, which the document itself spelled out.
"""

from __future__ import annotations

from pyhanko.pdf_utils import generic


def fixed_point(number) -> str:
    """A finite Decimal ``number`` in PDF's syntax: ``0.00000001``, ``-2.5``, ``1000``."""
    if number == number.to_integral_value():
        return format(number.to_integral_value(), "f")
    return format(number, "f")


def install() -> None:
    """Write every pyHanko real number in this process fixed-point from now on (idempotent)."""
    if getattr(generic.FloatObject.__repr__, "fixed_point", False):
        return

    def __repr__(self) -> str:
        return fixed_point(self)
    __repr__.fixed_point = True
    generic.FloatObject.__repr__ = __repr__
