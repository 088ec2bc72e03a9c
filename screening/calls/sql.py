"""Plain SQL for the few statements every call runs (every 30016 waits on them before its push).

Building a queryset costs ~0.5 ms of Python per query on this class of machine, more than the
indexed lookup itself; a fixed statement through the cursor costs ~0.05 ms. Only reads and inserts
that run for every call use these, in SQL that SQLite and PostgreSQL both accept; everything else
uses the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.utils.dateparse import parse_datetime


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def insert(model: type[Model], count: int = 1) -> str:
    """``INSERT INTO`` the model's table, every concrete column but the id (the database assigns
    it), ``count`` rows; the parameters come from ``insert_params``."""
    fields = _inserted(model)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return f"INSERT INTO {table(model)} ({names}) VALUES {', '.join([one] * count)}"  # noqa: S608


def insert_params(rows: Sequence[Model]) -> list[Any]:
    """The parameters of ``insert`` for ``rows`` (one model's), prepared as the ORM would."""
    params: list[Any] = []
    for row in rows:
        for field in _inserted(type(row)):
            params.append(field.get_db_prep_save(field.pre_save(row, True), connection))
    return params


@functools.cache
def _inserted(model: type[Model]) -> tuple[Field[Any, Any], ...]:
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key)


def param(value: datetime) -> Any:
    """A datetime as the backend stores it (SQLite: naive UTC text; PostgreSQL: as is)."""
    return connection.ops.adapt_datetimefield_value(value)


def to_datetime(value: Any) -> datetime | None:
    """A datetime column as read back: PostgreSQL gives aware datetimes, SQLite naive UTC text."""
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    parsed = value if isinstance(value, datetime) else parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"not a datetime: {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
