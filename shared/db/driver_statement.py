"""A statement compiled once and run on the database driver's connection.

For the one statement on a waiting client's path (a single image's row):
SQLAlchemy's execution layer (parameter processing, execution context, result
wrapping) cost about half a millisecond per call there. SQLAlchemy still
builds and compiles the statement, with the same bind processors, once per
process and dialect; errors are raised as SQLAlchemy's, and a connection the
driver found dead is invalidated, as SQLAlchemy's own execution would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class DriverStatement:
    sql: str
    constants: dict[str, Any]  # the values bound when the statement was built
    processors: dict[str, Callable[[Any], Any]]  # per parameter, as SQLAlchemy binds it

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect) -> DriverStatement:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        processors: dict[str, Callable[[Any], Any]] = {}
        constants: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
            if not bind.required:
                constants[name] = bind.effective_value
        return cls(str(compiled), constants, processors)

    def first_column(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """Run with ``values`` for the statement's parameters; the first column
        of the first row returned (None when no row is)."""
        parameters = {**self.constants, **values}
        for name, processor in self.processors.items():
            parameters[name] = processor(parameters[name])
        driver = connection.connection.driver_connection
        assert driver is not None, "a checked-out connection has a driver connection"
        module = connection.dialect.loaded_dbapi
        try:
            row = driver.execute(self.sql, parameters).fetchone()
        except module.Error as exc:
            if isinstance(exc, module.OperationalError | module.InterfaceError):
                connection.invalidate(exc)
            raise DBAPIError.instance(self.sql, parameters, exc, module.Error) from exc
        return None if row is None else row[0]
