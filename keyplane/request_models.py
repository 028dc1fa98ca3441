"""Pydantic types for every request the spec describes, built from it at start-up.

The spec (``openapi/swagger.yaml``) stays the one source of truth: each operation's
JSON or form body and each of its parameters becomes a pydantic ``TypeAdapter`` here,
so that a request is judged by pydantic itself and its 422 items are exactly what a
FastAPI application answers (``type``, ``loc``, ``msg``, ``input``, ``ctx``).

How a schema becomes a type:

* ``string``: ``str`` with its ``maxLength``, ``minLength`` and ``pattern``; an ``enum``
  is a Python ``Enum``, as a FastAPI model declares one; ``format: date-time`` is
  pydantic's ``datetime`` on the v1 API (every form it reads; one without an offset is
  UTC), and an RFC 3339 date-time with an offset on the account console API, whose
  contract says so.
* ``integer`` and ``number``: ``int`` and ``float`` within ``minimum`` and ``maximum``,
  never JSON's ``true`` or ``false`` (which pydantic would read as 1 and 0);
  ``boolean``: ``bool``; ``array``: a ``list`` within ``minItems`` and ``maxItems``.
* ``object``: a model whose fields are the properties, required as the schema says
  (the others default to ``None``, and a body keeps only what was sent), with unknown
  fields refused (``extra_forbidden``) where ``additionalProperties`` is false; an
  object of any properties is a ``dict``.
* ``nullable`` admits ``None``; ``anyOf`` takes what its first alternative that can
  takes, and refuses as its first alternative refuses.

A property whose ``format`` is ``password`` holds a secret: its errors never carry
the ``input`` (``SECRET_LOCATIONS``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError
from rfc3339_validator import validate_rfc3339

_METHODS = ("get", "put", "post", "delete", "patch")


def _utc(value: datetime) -> datetime:
    """A date-time without an offset is UTC, as everywhere in Keyplane."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _rfc3339(value: str) -> str:
    if not validate_rfc3339(value):
        raise PydanticCustomError(
            "datetime_parsing", "Input should be a valid RFC 3339 date-time with an offset"
        )
    return value


V1DateTime = Annotated[datetime, AfterValidator(_utc)]


@dataclass
class _Builder:
    console: bool
    secrets: set[tuple[str | int, ...]] = field(default_factory=set)
    _names: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def type_of(self, schema: Mapping[str, Any], name: str, loc: tuple[str | int, ...]) -> Any:
        if "anyOf" in schema:
            typed = _any_of([self.type_of(s, name, loc) for s in schema["anyOf"]])
        else:
            typed = self._plain(schema, name, loc)
        return typed | None if schema.get("nullable") else typed

    def _plain(self, schema: Mapping[str, Any], name: str, loc: tuple[str | int, ...]) -> Any:
        kind = schema.get("type")
        if schema.get("format") == "password":
            self.secrets.add(loc)
        if "enum" in schema:
            # An Enum, as a FastAPI model would declare it: its errors are of type "enum".
            values = [v for v in schema["enum"] if v is not None]
            members = {f"v{index}": value for index, value in enumerate(values)}
            return enum.Enum(f"{name}_values", members, type=type(values[0]))
        if kind == "string":
            if schema.get("format") == "date-time" and not self.console:
                return V1DateTime
            text = Annotated[
                str,
                StringConstraints(
                    max_length=schema.get("maxLength"),
                    min_length=schema.get("minLength"),
                    pattern=_rust_pattern(schema.get("pattern")),
                ),
            ]
            if schema.get("format") == "date-time":
                return Annotated[text, AfterValidator(_rfc3339)]
            return text
        if kind in ("integer", "number"):
            base = int if kind == "integer" else float
            bounds = Field(ge=schema.get("minimum"), le=schema.get("maximum"))
            return Annotated[base, BeforeValidator(_NOT_A_BOOLEAN[kind]), bounds]
        if kind == "boolean":
            return bool
        if kind == "array":
            items = self.type_of(schema.get("items", {}), name, (*loc, 0))
            return Annotated[
                list[items],  # type: ignore[valid-type]
                Field(min_length=schema.get("minItems"), max_length=schema.get("maxItems")),
            ]
        if kind == "object" or "properties" in schema:
            return self._model(schema, name, loc)
        return Any

    def _model(self, schema: Mapping[str, Any], name: str, loc: tuple[str | int, ...]) -> Any:
        properties = schema.get("properties", {})
        if not properties:
            return dict[str, Any]
        required = set(schema.get("required", []))
        fields: dict[str, Any] = {}
        for prop, sub in properties.items():
            typed = self.type_of(sub, f"{name}_{prop}", (*loc, prop))
            default = ... if prop in required else sub.get("default")
            fields[prop] = (typed, default)
        extra: Literal["forbid", "ignore"] = (
            "forbid" if schema.get("additionalProperties") is False else "ignore"
        )
        title = schema.get("title") or f"{name}{next(self._names)}"
        return create_model(re.sub(r"\W", "_", title), __config__=ConfigDict(extra=extra), **fields)


def _not_a_boolean(error_type: str, message: str) -> Any:
    def refuse(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(error_type, message)
        return value

    return refuse


# JSON's true and false are not numbers (pydantic, and so FastAPI, would read 1 and 0).
_NOT_A_BOOLEAN = {
    "integer": _not_a_boolean("int_type", "Input should be a valid integer"),
    "number": _not_a_boolean("float_type", "Input should be a valid number"),
}


def _any_of(options: list[Any]) -> Any:
    """The first alternative that takes the value; else the first one's refusal, at the
    field's own location (pydantic's union would name each alternative in ``loc``)."""
    adapters = [TypeAdapter(option) for option in options]

    def validate(value: Any) -> Any:
        refusal: ValidationError | None = None
        for adapter in adapters:
            try:
                return adapter.validate_python(value)
            except ValidationError as error:
                refusal = refusal or error
        assert refusal is not None
        first = refusal.errors(include_url=False)[0]
        raise PydanticCustomError(first["type"], first["msg"], first.get("ctx"))

    return Annotated[Any, PlainValidator(validate)]


def _rust_pattern(pattern: str | None) -> str | None:
    """JSON Schema patterns are ECMA-262 regular expressions; pydantic's engine reads
    these ones alike (``$`` ends the input there as in ECMA-262)."""
    return pattern


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path, query, header
    required: bool
    adapter: TypeAdapter[Any]
    secret: bool = False


@dataclass(frozen=True)
class Body:
    adapter: TypeAdapter[Any]
    required: bool
    media_type: str
    secrets: frozenset[tuple[str | int, ...]] = frozenset()


@dataclass(frozen=True)
class Operation:
    """What one operation's request may hold, as pydantic judges it."""

    path: str  # the template, ``/v1/api-keys/{item_id}``
    parameters: tuple[Parameter, ...]
    bodies: Mapping[str, Body]  # by media type
    console: bool


def build(spec: Mapping[str, Any], console_prefix: str) -> dict[str, Operation]:
    """Every operation of a resolved spec (no ``$ref`` left), by its operationId."""
    built: dict[str, Operation] = {}
    for path, item in spec["paths"].items():
        console = path == console_prefix or path.startswith(console_prefix + "/")
        shared = item.get("parameters", [])
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            builder = _Builder(console=console)
            parameters = []
            unique = {(p["name"], p["in"]): p for p in [*shared, *operation.get("parameters", [])]}
            for parameter in unique.values():
                schema = parameter.get("schema", {})
                typed = builder.type_of(schema, parameter["name"], ())
                parameters.append(
                    Parameter(
                        name=parameter["name"],
                        location=parameter["in"],
                        required=bool(parameter.get("required")),
                        adapter=TypeAdapter(typed),
                        secret=schema.get("format") == "password",
                    )
                )
            bodies = {}
            request_body = operation.get("requestBody", {})
            for media_type, content in request_body.get("content", {}).items():
                body_builder = _Builder(console=console)
                name = operation["operationId"].replace(".", "_")
                typed = body_builder.type_of(content.get("schema", {}), name, ())
                bodies[media_type] = Body(
                    TypeAdapter(typed),
                    required=bool(request_body.get("required")),
                    media_type=media_type,
                    secrets=frozenset(body_builder.secrets),
                )
            built[operation["operationId"]] = Operation(path, tuple(parameters), bodies, console)
    return built
