"""Readable tables and ``--json`` output for the command line."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from typing import Any, Sequence


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
    json.dump(to_plain(value), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    """Columns padded to their widest cell; ``empty`` when there are no rows."""
    if not rows:
        print(empty)
        return
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """``name: value`` lines, names aligned."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name + ':':<{width + 1}} {value}")
