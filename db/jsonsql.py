"""JSON built by the database, the same on SQLite and PostgreSQL: one row's related rows
come back in its own row, as Python lists and dicts, with no second query and no ORM
objects (``db.api_keys.page``); and text ordered as Python orders it (``bytewise``),
for the lists built so."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, Select, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class _Array(FunctionElement[Any]):
    type = JSON()
    inherit_cache = True


class _Object(FunctionElement[Any]):
    type = JSON()
    inherit_cache = True


@compiles(_Array, "sqlite")
def _sqlite_array(element: _Array, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = element.clauses
    sql = compiler.process(value, **kw)
    # JSON read from a subquery's column is text to SQLite: json() makes it JSON again.
    return f"json_group_array({f'json({sql})' if isinstance(value.type, JSON) else sql})"


@compiles(_Array, "postgresql")
def _postgresql_array(element: _Array, compiler: SQLCompiler, **kw: Any) -> str:
    return f"coalesce(json_agg({compiler.process(element.clauses, **kw)}), '[]'::json)"


@compiles(_Object, "sqlite")
def _sqlite_object(element: _Object, compiler: SQLCompiler, **kw: Any) -> str:
    parts = []
    for clause in element.clauses:
        sql = compiler.process(clause, **kw)
        # SQLite's booleans are the integers 0 and 1: JSON's true and false instead.
        if isinstance(clause.type, Boolean):
            sql = f"json(CASE WHEN {sql} THEN 'true' ELSE 'false' END)"
        parts.append(sql)
    return f"json_object({', '.join(parts)})"


@compiles(_Object, "postgresql")
def _postgresql_object(element: _Object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_build_object({compiler.process(element.clauses, **kw)})"


class _Bytewise(FunctionElement[Any]):
    inherit_cache = True


@compiles(_Bytewise, "sqlite")
def _sqlite_bytewise(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # SQLite compares text bytewise


@compiles(_Bytewise, "postgresql")
def _postgresql_bytewise(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


def bytewise(text: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[Any]:
    """``text`` to order by as Python's ``sorted`` orders it (by code point, which UTF-8
    bytes keep), whatever the database's collation: ``en_US`` would put ``admin``
    before ``Billing``."""
    return _Bytewise(text)


def array_of(rows: Select[Any]) -> ColumnElement[Any]:
    """The one column of ``rows`` (a correlated select), in their order, as a JSON
    array: ``[]`` for none."""
    ordered = rows.subquery()
    (value,) = ordered.c
    return select(_Array(value)).scalar_subquery()


def object_of(**fields: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    """A JSON object of these names (the code's own, never input) and values."""
    pairs: list[Any] = []
    for name, value in fields.items():
        pairs += [literal_column(f"'{name}'"), value]
    return _Object(*pairs)
