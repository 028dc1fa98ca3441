"""Request validators that report *every* error, FastAPI-style (``loc``, ``msg``, ``type``).

Connexion's own validators stop at the first error and raise a plain string. These
subclasses collect ``iter_errors`` into a ``RequestInvalid`` that each surface then
shapes (``keyplane.problems``). Messages never echo the input: it may be a secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.utils import is_null, is_nullable
from connexion.validators import FormDataValidator, JSONRequestBodyValidator
from connexion.validators import ParameterValidator as ConnexionParameterValidator
from jsonschema import Draft4Validator
from jsonschema import ValidationError as SchemaError
from starlette.types import Receive, Scope

Detail = dict[str, Any]

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
    found: list[Detail] = []
    for error in validator.iter_errors(instance):
        for item in _details(error, [*location, *error.absolute_path], parsing):
            if item not in found:
                found.append(item)
    # FastAPI lists errors in the order the fields are declared: so do we.
    declared = list(validator.schema.get("properties", {}))

    def field_order(item: Detail) -> tuple[int, str]:
        rest = item["loc"][len(location) :]
        name = rest[0] if rest else ""
        position = declared.index(name) if name in declared else len(declared)
        return position, ".".join(str(part) for part in rest)

    return sorted(found, key=field_order)


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
                errors += parameter_errors(location, param, get(name))
        if errors:
            raise RequestInvalid(errors)


def parameter_errors(location: str, param: dict[str, Any], value: Any) -> list[Detail]:
    loc: list[str | int] = [location, param["name"]]
    if value is None:
        return [detail(loc, "Field required", "missing")] if param.get("required") else []
    if is_nullable(param) and is_null(value):
        return []
    validator = Draft4Validator(
        param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER
    )
    return schema_errors(validator, value, loc, parsing=True)


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
        validator = Draft4RequestValidator(
            self._schema, format_checker=Draft4Validator.FORMAT_CHECKER
        )
        errors = [*extra, *schema_errors(validator, body, ["body"])]
        if errors:
            raise RequestInvalid(errors)


class JSONBodyValidator(_BodyValidator, JSONRequestBodyValidator):  # type: ignore[misc]
    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            return json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise RequestInvalid(
                [detail(["body"], "Body is not valid UTF-8", "json_invalid")]
            ) from None
        except json.JSONDecodeError as error:
            raise RequestInvalid(
                [detail(["body", error.pos], "JSON decode error", "json_invalid")]
            ) from None
        except RecursionError:
            raise RequestInvalid(
                [detail(["body"], "JSON nested too deeply", "json_invalid")]
            ) from None

    def _validate(self, body: Any) -> None:
        if body is None and not self._nullable:
            raise RequestInvalid([detail(["body"], "Field required", "missing")])
        self._raise_errors(body)


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
