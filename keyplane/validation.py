"""Request validators that report every error, FastAPI-style (``loc``, ``msg``, ``type``).

Connexion's own validators stop at the first error and raise a plain string. These
subclasses collect ``iter_errors`` into a ``RequestInvalid`` that each surface then
shapes (``keyplane.problems``). Messages never echo the input: it may be a secret.

Validation is linear in the size of its input and bounded: a list longer than its
``maxItems`` is reported as too long without its items being checked one by one, an
answer lists at most ``MAX_ERRORS`` errors, and each schema's validator is built once.
A JSON body is refused (422, ``json_invalid`` and friends) when it has a duplicate key,
a string with a lone surrogate or a NUL character (no database can store either),
nesting deeper than ``MAX_DEPTH``, a number that is not finite (``NaN``, ``Infinity``,
``-Infinity``, or one too large for a double, such as ``1e400``: JSON has no such
values, and answers holding them would not be JSON), or an integer outside int64 (no
id or count goes past it; such an integer is refused from its digits, before Python
converts them, however many there are).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.utils import is_null, is_nullable
from connexion.validators import FormDataValidator, JSONRequestBodyValidator
from connexion.validators import ParameterValidator as ConnexionParameterValidator
from jsonschema import Draft4Validator, validators
from jsonschema import ValidationError as SchemaError
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope

Detail = dict[str, Any]
MAX_ERRORS = 50
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _items_unless_too_many(
    validator: Draft4Validator, items: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[SchemaError]:
    """A list longer than it may be is one error: too long. Its items are not checked."""
    if isinstance(instance, list) and len(instance) > schema.get("maxItems", len(instance)):
        return
    yield from Draft4Validator.VALIDATORS["items"](validator, items, instance, schema)


@functools.cache
def _ecma(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where "$" ends the input; Python's "$" also
    # matches before a final newline, so "abc\n" would pass "^[a-z]+$" here.
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


def _pattern(
    validator: Draft4Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[SchemaError]:
    if isinstance(instance, str) and not _ecma(pattern).search(instance):
        yield SchemaError(f"does not match {pattern!r}")


_Validator = validators.extend(
    Draft4RequestValidator, {"items": _items_unless_too_many, "pattern": _pattern}
)
_validators: dict[int, tuple[dict[str, Any], Draft4Validator]] = {}


def validator_for(schema: dict[str, Any]) -> Draft4Validator:
    """One validator per schema of the spec, built the first time it is needed."""
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _validators[id(schema)] = (
            schema,
            _Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER),
        )
    return cached[1]


_TYPE_NAMES = {
    "string": ("a valid string", "string"),
    "integer": ("a valid integer", "int"),
    "number": ("a valid number", "float"),
    "boolean": ("a valid boolean", "bool"),
    "array": ("a valid list", "list"),
    "object": ("a valid dictionary", "dict"),
}


class RequestInvalid(BadRequestProblem):  # type: ignore[misc]
    """A request that does not match the spec; ``errors`` lists every problem found."""

    def __init__(self, errors: list[Detail]) -> None:
        super().__init__(detail="; ".join(describe(e) for e in errors))
        self.errors = errors


def detail(loc: list[str | int], msg: str, error_type: str) -> Detail:
    return {"loc": loc, "msg": msg, "type": error_type}


def describe(error: Detail) -> str:
    """One line for surfaces that answer a single message: ``body.description: ...``."""
    path = ".".join(str(part) for part in error["loc"][1:])
    return f"{path}: {error['msg']}" if path else error["msg"]


def schema_errors(
    validator: Draft4Validator, instance: Any, location: list[str | int], *, parsing: bool = False
) -> list[Detail]:
    found: dict[tuple[Any, ...], Detail] = {}
    for error in validator.iter_errors(instance):
        for item in _details(error, [*location, *error.absolute_path], parsing):
            found.setdefault((*item["loc"], item["type"], item["msg"]), item)
        if len(found) >= MAX_ERRORS:
            break
    # FastAPI lists errors in the order the fields are declared: so do we.
    declared = {name: i for i, name in enumerate(validator.schema.get("properties", {}))}

    def field_order(item: Detail) -> tuple[int, str]:
        rest = item["loc"][len(location) :]
        name = rest[0] if rest else ""
        return declared.get(name, len(declared)), ".".join(str(part) for part in rest)

    return sorted(found.values(), key=field_order)[:MAX_ERRORS]


def _details(error: SchemaError, loc: list[str | int], parsing: bool) -> Iterator[Detail]:
    keyword, expected = error.validator, error.validator_value
    if keyword == "required":
        for name in expected:
            if isinstance(error.instance, dict) and name not in error.instance:
                yield detail([*loc, name], "Field required", "missing")
        return
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        for name in sorted(set(error.instance) - allowed):
            yield detail([*loc, name], "Extra inputs are not permitted", "extra_forbidden")
        return
    if keyword in {"anyOf", "oneOf"} and error.context:
        # Explain by the first alternative (e.g. "a date-time", before "or empty").
        first = [e for e in error.context if e.schema_path and e.schema_path[0] == 0]
        if first:
            yield from _details(first[0], loc, parsing)
            return
    yield detail(loc, *_message(keyword, expected, parsing))


def _message(keyword: str, expected: Any, parsing: bool) -> tuple[str, str]:
    if keyword == "type":
        name = expected[0] if isinstance(expected, list) else expected
        words, code = _TYPE_NAMES.get(name, (f"of type {name}", name))
        if parsing:
            return f"Input should be {words}, unable to parse the value", f"{code}_parsing"
        return f"Input should be {words}", f"{code}_type"
    if keyword == "format":
        if expected == "date-time":
            return "Input should be a valid RFC 3339 date-time with an offset", "datetime_parsing"
        return f"Input should be a valid {expected}", "value_error"
    if keyword == "enum":
        options = ", ".join(repr(option) for option in expected)
        return f"Input should be one of {options}", "enum"
    messages = {
        "minimum": (f"Input should be greater than or equal to {expected}", "greater_than_equal"),
        "maximum": (f"Input should be less than or equal to {expected}", "less_than_equal"),
        "minLength": (f"String should have at least {expected} characters", "string_too_short"),
        "maxLength": (f"String should have at most {expected} characters", "string_too_long"),
        "pattern": (f"String should match pattern '{expected}'", "string_pattern_mismatch"),
        "minItems": (f"List should have at least {expected} items", "too_short"),
        "maxItems": (f"List should have at most {expected} items", "too_long"),
        "uniqueItems": ("List items should be unique", "value_error"),
    }
    return messages.get(keyword, ("Input is not valid", "value_error"))


class ParameterValidator(ConnexionParameterValidator):  # type: ignore[misc]
    def validate_request(self, request: Any) -> None:
        errors: list[Detail] = []
        if self.strict_validation:
            extra = self.validate_query_parameter_list(request, self.security_query_params)
            errors += [
                detail(["query", name], "Extra inputs are not permitted", "extra_forbidden")
                for name in sorted(extra)
            ]
        given = QueryParams(request.scope.get("query_string", b""))  # every value, as sent
        sources = {
            "path": lambda name: request.path_params.get(name.replace("-", "_")),
            "query": request.query_params.get,
            "header": request.headers.get,
            "cookie": request.cookies.get,
        }
        for location, get in sources.items():
            # Connexion may list a path-level parameter once per operation of the path.
            unique = {param["name"]: param for param in self.parameters.get(location, [])}
            for name, param in unique.items():
                if location == "query" and len(given.getlist(name)) > 1:
                    # None of ours is a list: which of several values would count?
                    errors.append(
                        detail(["query", name], "Input should be given once", "value_error")
                    )
                    continue
                errors += parameter_errors(location, param, get(name))
        if errors:
            raise RequestInvalid(errors)


def parameter_errors(location: str, param: dict[str, Any], value: Any) -> list[Detail]:
    loc: list[str | int] = [location, param["name"]]
    if value is None:
        return [detail(loc, "Field required", "missing")] if param.get("required") else []
    if is_nullable(param) and is_null(value):
        return []
    return schema_errors(validator_for(param.get("schema", param)), value, loc, parsing=True)


class _BodyValidator:
    """What the JSON and form validators share: a missing body and the error list."""

    _schema: dict[str, Any]

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        try:
            return await super().wrap_receive(receive, scope=scope)  # type: ignore[misc, no-any-return]
        except RequestInvalid:
            raise
        except BadRequestProblem:  # Connexion's "RequestBody is required"
            raise RequestInvalid([detail(["body"], "Field required", "missing")]) from None

    def _raise_errors(self, body: Any, extra: Iterable[Detail] = ()) -> None:
        errors = [*extra, *schema_errors(validator_for(self._schema), body, ["body"])]
        if errors:
            raise RequestInvalid(errors[:MAX_ERRORS])


class JSONBodyValidator(_BodyValidator, JSONRequestBodyValidator):  # type: ignore[misc]
    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        return parse_json(raw) if raw else None

    def _validate(self, body: Any) -> None:
        if body is None and not self._nullable:
            raise RequestInvalid([detail(["body"], "Field required", "missing")])
        self._raise_errors(body)


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


class _Refused:
    """A number that JSON cannot carry faithfully, left in its place in the parsed body
    so that the error can say where it was."""

    def __init__(self, message: str, error_type: str) -> None:
        self.detail = (message, error_type)


_NOT_FINITE = _Refused("Input should be a finite number", "finite_number")
_NOT_INT64 = _Refused(
    f"Integers should lie within int64 ({INT64_MIN} to {INT64_MAX})", "int_parsing_size"
)


def parse_json(raw: bytes) -> Any:
    """A JSON body (UTF-8: ``keyplane.guards`` refuses other charsets), or RequestInvalid."""

    def invalid(message: str, loc: list[str | int], error_type: str = "json_invalid") -> Any:
        return RequestInvalid([detail(loc, message, error_type)])

    refused: list[_Refused] = []

    def constant(_: str) -> _Refused:  # NaN, Infinity, -Infinity
        refused.append(_NOT_FINITE)
        return _NOT_FINITE

    def floating(text: str) -> float | _Refused:
        value = float(text)
        if math.isfinite(value):
            return value
        refused.append(_NOT_FINITE)
        return _NOT_FINITE

    def integer(text: str) -> int | _Refused:
        # By its digits first: Python refuses to convert more than 4,300 of them.
        if len(text) - text.startswith("-") <= _INT64_DIGITS:
            value = int(text)
            if INT64_MIN <= value <= INT64_MAX:
                return value
        refused.append(_NOT_INT64)
        return _NOT_INT64

    try:
        body = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object,
            parse_constant=constant,
            parse_float=floating,
            parse_int=integer,
        )
    except UnicodeDecodeError:
        raise invalid("Body is not valid UTF-8", ["body"]) from None
    except json.JSONDecodeError as error:
        raise invalid("JSON decode error", ["body", error.pos]) from None
    except RecursionError:
        raise invalid("JSON nested too deeply", ["body"]) from None
    except _DuplicateKey:
        raise invalid("JSON object has a duplicate key", ["body"]) from None
    # Cheap tests on the raw bytes first: deep nesting needs brackets, and a NUL or a
    # lone surrogate needs a \u escape (UTF-8 cannot carry them raw).
    if refused or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or b"\\u" in raw:
        problem = _string_or_depth_problem(body)
        if problem is not None:
            raise RequestInvalid([problem])
    return body


def _string_or_depth_problem(body: Any) -> Detail | None:
    pending: list[tuple[Any, list[str | int]]] = [(body, ["body"])]
    while pending:
        value, loc = pending.pop()
        if len(loc) > MAX_DEPTH:
            return detail(["body"], f"JSON nested deeper than {MAX_DEPTH} levels", "json_invalid")
        if isinstance(value, _Refused):
            return detail(loc, *value.detail)
        if isinstance(value, str):
            if "\x00" in value:
                return detail(loc, "String should not contain NUL characters", "value_error")
            if _LONE_SURROGATE.search(value):
                return detail(loc, "Input should be a valid string", "string_unicode")
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key or _LONE_SURROGATE.search(key):
                    return detail(loc, "Keys should be valid strings", "string_unicode")
                pending.append((item, [*loc, key]))
        elif isinstance(value, list):
            pending += [(item, [*loc, i]) for i, item in enumerate(value)]
    return None


class FormValidator(_BodyValidator, FormDataValidator):  # type: ignore[misc]
    def _validate(self, body: Any) -> None:
        extra: list[Detail] = []
        if self._strict_validation:
            allowed = set(self._schema.get("properties", {}))
            extra = [
                detail(["body", name], "Extra inputs are not permitted", "extra_forbidden")
                for name in sorted(set(body) - allowed)
            ]
        self._raise_errors(body, extra)


VALIDATORS = {
    "parameter": ParameterValidator,
    "body": MediaTypeDict(
        {
            "*/*json": JSONBodyValidator,
            "application/x-www-form-urlencoded": FormValidator,
        }
    ),
}
