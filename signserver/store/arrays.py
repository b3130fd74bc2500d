"""TextArray: a list of texts that PostgreSQL's driver sends as one binary array.

psycopg sends a Python list as a text-format array literal unless told otherwise, quoting and
escaping every element in Python: ten audit details of a SignHash (JSON, full of quotes) cost
117 µs to send, their ten record tails as much again, against 8 µs for the same list in binary
(element lengths and bytes, nothing escaped; psycopg's ``ListBinaryDumper``). A batch's call of
``spend_activation_token`` sends three such lists. The driver is told once per connection
(:func:`send_text_arrays_in_binary`, which ``Database`` hooks to every PostgreSQL connection it
opens); the element type is text, so the statement reads the parameter as ``TEXT[]``.
"""

from __future__ import annotations

from typing import Any


class TextArray(list):
    """A list of ``str`` for a ``TEXT[]`` parameter on PostgreSQL: sent in binary. Any other
    list keeps the driver's default."""


def send_text_arrays_in_binary(dbapi_connection: Any, _record: Any = None) -> None:
    """Have a new psycopg connection send every :class:`TextArray` as a binary ``TEXT[]``
    (a SQLAlchemy ``connect`` event handler)."""
    from psycopg.types.array import ListBinaryDumper  # the driver, loaded with the first connection

    dbapi_connection.adapters.register_dumper(TextArray, ListBinaryDumper)
