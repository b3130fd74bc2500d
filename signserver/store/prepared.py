"""PreparedStatement: a fixed Core statement run straight on the driver, for the way to a signature.

SQLAlchemy's execution of a Core statement (its compiled-cache lookup, parameter processing and
result proxy) costs about 50 µs of CPU per statement on the 2-core machine class: six of them
in the transaction that spends an activation token cost half as much as the RSA signature the
call is for. A statement here is compiled once per dialect and then executed on the DBAPI
cursor of the caller's connection, inside the caller's transaction, with the dialect's own
conversions of parameters and results; errors are SQLAlchemy's, as from ``Connection.execute``.

Only for statements whose SQL never changes with the values (no expanding ``IN``, no
Python-side column defaults): the few that every signature runs.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, NoResultFound
from sqlalchemy.sql import Executable


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # parameter names in order, for a positional paramstyle
    defaults: dict[str, Any]  # values bound in the statement itself (LIMIT 1, used = true), converted
    bind_processors: dict[str, Callable[[Any], Any]]  # of the parameters a caller gives
    row_type: type | None  # a named tuple of the selected columns, or None for DML
    result_processors: tuple[Callable[[Any], Any] | None, ...]


class PreparedStatement:
    """One Core statement, compiled on first use with each dialect."""

    def __init__(self, statement: Executable):
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def execute(self, conn: Connection, parameters: Mapping[str, Any] | None = None) -> "DriverResult":
        """Run the statement with ``parameters`` in ``conn``'s transaction.

        Raises: sqlalchemy.exc.DBAPIError (OperationalError, IntegrityError, ...): the driver refused.
        """
        compiled = self._for(conn.dialect)
        values = self._values(compiled, parameters or {})
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.execute(compiled.sql, values)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(compiled.sql, values, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
        return DriverResult(cursor, compiled)

    @staticmethod
    def _values(compiled: _Compiled, parameters: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        merged = {**compiled.defaults, **parameters}
        for name, process in compiled.bind_processors.items():
            if name in parameters:
                merged[name] = process(merged[name])
        if compiled.positions is None:
            return merged
        return tuple(merged[name] for name in compiled.positions)

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _compile(self._statement, dialect)
        return found


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    binds = compiled.binds
    processors, defaults = {}, {}
    for name, bind in binds.items():
        process = bind.type.bind_processor(dialect)
        if bind.required:
            if process is not None:
                processors[name] = process
        else:
            value = bind.effective_value
            defaults[name] = value if process is None else process(value)
    if getattr(statement, "_returning", ()):
        columns = list(statement.exported_columns)  # an UPDATE's RETURNING: read like a SELECT's
    else:
        columns = list(getattr(statement, "selected_columns", ()))
    row_type = namedtuple("Row", [column.key for column in columns]) if columns else None
    return _Compiled(
        sql=str(compiled),
        positions=tuple(compiled.positiontup) if compiled.positional else None,
        defaults=defaults,
        bind_processors=processors,
        row_type=row_type,
        result_processors=tuple(column.type.result_processor(dialect, None) for column in columns))


class DriverResult:
    """The outcome of a :class:`PreparedStatement`: rows as named tuples, or a row count."""

    def __init__(self, cursor, compiled: _Compiled):
        self._cursor = cursor
        self._compiled = compiled
        self.rowcount: int = cursor.rowcount
        if compiled.row_type is None:
            cursor.close()  # no rows to read

    def first(self):
        """The first row, or None; the cursor is closed."""
        try:
            raw = self._cursor.fetchone()
        finally:
            self._cursor.close()
        if raw is None:
            return None
        processors = self._compiled.result_processors
        return self._compiled.row_type(*(value if process is None else process(value)
                                         for value, process in zip(raw, processors)))

    def one(self):
        """The first row. Raises: sqlalchemy.exc.NoResultFound: there is none."""
        row = self.first()
        if row is None:
            raise NoResultFound("no row was found where one was required")
        return row

    def close(self) -> None:
        self._cursor.close()
