"""Readable tables and ``--json`` output for the command line."""

from __future__ import annotations

import dataclasses
import enum
import sys
from typing import Any, Iterable, Sequence

from signserver.json_array import JsonArrayWriter
from signserver.terminal_text import json_text, shown


def to_plain(value: Any) -> Any:
    """Dataclasses, enums, bytes and paths as JSON-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json_text(to_plain(value), indent=2) + "\n")


def print_json_array(items: Iterable[Any]) -> None:
    """``print_json(list(items))``, an item at a time as ``items`` yields them: a listing's items
    are never all in memory.

    Raises: what ``items`` raises; after the first item, once the array is closed: standard
    output stays one JSON array, of the items before the failure, which the caller reports on
    standard error.
    """
    JsonArrayWriter(sys.stdout).write_all(to_plain(item) for item in items)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    """Columns padded to their widest cell; ``empty`` when there are no rows."""
    print_table_pages(headers, [rows], empty)


def print_table_pages(headers: Sequence[str], pages: Iterable[Sequence[Sequence[Any]]], empty: str = "(none)") -> None:
    """:func:`print_table`'s table, a page of rows at a time as ``pages`` yields them: a listing's
    rows are never all in memory. The headers come with the first page; a column is as wide as its
    widest cell so far, so a later page with a wider cell widens its column from there on.
    ``empty`` when there are no rows.

    Raises: what ``pages`` raises, after the rows before it are printed.
    """
    widths: list[int] | None = None
    for page in pages:
        cells = [["" if c is None else shown(str(c)) for c in row] for row in page]
        if not cells:
            continue
        if widths is None:
            names = [str(h) for h in headers]
            widths = [max(len(row[i]) for row in [names, *cells]) for i in range(len(headers))]
            _print_row(names, widths)
            print("  ".join("-" * width for width in widths))
        else:
            widths = [max(width, *(len(row[i]) for row in cells)) for i, width in enumerate(widths)]
        for row in cells:
            _print_row(row, widths)
    if widths is None:
        print(empty)


def _print_row(cells: Sequence[str], widths: Sequence[int]) -> None:
    print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """``name: value`` lines, names aligned."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name + ':':<{width + 1}} {shown(str(value))}")
