"""Requests judged as FastAPI judges them, by pydantic, in FastAPI's order.

1. **JSON first** (``JsonFirst``, before authentication): an operation's JSON body is
   read and decoded; one that is not JSON is a 422 ``json_invalid``, whoever sends it.
2. **Then credentials** (Connexion's security, ``keyplane.security``): 401 or 403.
3. **Then every error at once** (``Validation``): the path, query and header parameters
   and the body, each by the pydantic type the spec gives it
   (``keyplane.request_models``), listed together in one 422 whose items are
   pydantic's own (``type``, ``loc``, ``msg``, ``input``, ``ctx``). A request that
   passes goes on as pydantic read it: ids, numbers and date-times in their one
   canonical form (a date-time without an offset is UTC), a body holding only what was
   sent.

On the v1 API an unknown query parameter is ignored, as FastAPI ignores it; the account
console API refuses it, as before. A secret (a property whose ``format`` is
``password``) is never echoed as ``input``, nor is a body that holds one.

What FastAPI would take and Keyplane refuses, on purpose (``docs/api.md`` lists it):
a JSON body with a duplicate key, a string holding a NUL character or a lone surrogate
(no database stores either), nesting deeper than ``MAX_DEPTH``, a number that is not
finite (``NaN``, ``Infinity``, ``1e400``), an integer outside int64 (refused from its
digits, before Python converts them), and an unknown body field (``extra_forbidden``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.middleware.abstract import SpecMiddleware
from connexion.spec import Specification
from pydantic import ValidationError
from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.request_models import Body, Operation, build

Detail = dict[str, Any]
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_PARSED = "keyplane.json"  # the decoded JSON body, in the scope's extensions
JSON = "application/json"  # every JSON media type, once the guards have named it so
_ROUTING = "connexion_routing"


class RequestInvalid(BadRequestProblem):  # type: ignore[misc]
    """A request that does not match the spec; ``errors`` lists every problem found."""

    def __init__(self, errors: list[Detail]) -> None:
        super().__init__(detail="; ".join(describe(e) for e in errors))
        self.errors = errors


def detail(loc: list[str | int], msg: str, error_type: str, **extra: Any) -> Detail:
    return {"type": error_type, "loc": loc, "msg": msg, **extra}


def describe(error: Detail) -> str:
    """One line for surfaces that answer a single message: ``description: ...``."""
    path = ".".join(str(part) for part in error["loc"][1:])
    return f"{path}: {error['msg']}" if path else error["msg"]


# -- JSON, hardened --------------------------------------------------------------------


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
    """A JSON body (decoded as UTF-8, as JSON is), or RequestInvalid."""

    def invalid(message: str, loc: list[str | int], error: str | None = None) -> Any:
        extra = {"input": {}, "ctx": {"error": error}} if error else {"input": {}}
        return RequestInvalid([detail(loc, message, "json_invalid", **extra)])

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
        raise invalid("JSON decode error", ["body"], "Body is not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise invalid("JSON decode error", ["body", error.pos], error.msg) from None
    except RecursionError:
        raise invalid("JSON decode error", ["body", 0], "nested too deeply") from None
    except _DuplicateKey:
        raise invalid("JSON object has a duplicate key", ["body"]) from None
    # Cheap tests on the raw bytes first: deep nesting needs brackets, and a NUL or a
    # lone surrogate needs a \\u escape (UTF-8 cannot carry them raw).
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


# -- the middlewares ----------------------------------------------------------------------


class _Operations(SpecMiddleware):  # type: ignore[misc]
    """What both middlewares share: the spec's operations as pydantic types, found by the
    operation Connexion routed the request to (``prefix`` + operationId)."""

    def __init__(self, app: ASGIApp, *, prefix: str, console_prefix: str) -> None:
        self.app = app
        self.prefix = prefix
        self.console_prefix = console_prefix
        self.operations: dict[str, Operation] = {}

    def add_api(self, specification: Specification, **_: Any) -> None:
        for operation_id, operation in build(specification, self.console_prefix).items():
            self.operations[self.prefix + operation_id] = operation

    def operation(self, scope: Scope) -> Operation | None:
        routed = scope.get("extensions", {}).get(_ROUTING, {}).get("operation_id")
        return self.operations.get(routed) if routed else None


class JsonFirst(_Operations):
    """Read and decode an operation's JSON body before anything else looks at it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = self.operation(scope) if scope["type"] == "http" else None
        media_type = _media_type(scope)
        if operation is None or media_type != JSON or media_type not in operation.bodies:
            await self.app(scope, receive, send)
            return
        raw = await _read(receive)
        if raw:
            scope.setdefault("extensions", {})[_PARSED] = parse_json(raw)
        await self.app(scope, _replay(raw, receive), send)


class Validation(_Operations):
    """Every parameter and the body, each by its pydantic type, all errors at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = self.operation(scope) if scope["type"] == "http" else None
        if operation is None:
            await self.app(scope, receive, send)
            return
        errors, canonical = _parameters(operation, scope)
        body: bytes | None = None
        if operation.bodies:
            media_type = _media_type(scope)
            given = operation.bodies.get(media_type)
            if given is None:
                if media_type:
                    raise UnsupportedMediaTypeProblem(detail=f"Invalid Content-type ({media_type})")
                given = next(iter(operation.bodies.values()))  # no body: judged as missing
            body_errors, body = _body(given, scope, await _read(receive))
            errors += body_errors
        if errors:
            raise RequestInvalid(errors)
        _canonical_url(scope, operation, canonical)
        if body is not None:
            MutableHeaders(scope=scope)["content-length"] = str(len(body))
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _media_type(scope: Scope) -> str:
    return Headers(scope=scope).get("content-type", "").partition(";")[0].strip().lower()


async def _read(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()  # after the body, only a disconnect can come
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _parameters(operation: Operation, scope: Scope) -> tuple[list[Detail], dict[str, Any]]:
    """Errors of every parameter, path first, then query and headers (FastAPI's order),
    and the canonical value of each one given."""
    errors: list[Detail] = []
    canonical: dict[str, Any] = {}
    given = QueryParams(scope.get("query_string", b""))
    headers = Headers(scope=scope)
    path_params = scope.get("path_params", {})
    sources: dict[str, Callable[[str], Any]] = {
        "path": path_params.get,
        "query": given.get,
        "header": headers.get,
    }
    order = {"path": 0, "query": 1, "header": 2, "cookie": 3}
    for parameter in sorted(operation.parameters, key=lambda p: order[p.location]):
        loc: list[str | int] = [parameter.location, parameter.name]
        if parameter.location == "query" and len(given.getlist(parameter.name)) > 1:
            errors.append(detail(loc, "Input should be given once", "value_error"))
            continue
        source = sources.get(parameter.location)
        raw = source(parameter.name) if source is not None else None
        if raw is None:
            if parameter.required:
                errors.append(detail(loc, "Field required", "missing", input=None))
            continue
        try:
            canonical[f"{parameter.location}:{parameter.name}"] = parameter.adapter.validate_python(
                raw
            )
        except ValidationError as error:
            errors += _details(error, loc, secret=parameter.secret)
    if operation.console:  # the console's contract: unknown query parameters refused
        known = {p.name for p in operation.parameters if p.location == "query"}
        errors += [
            detail(["query", name], "Extra inputs are not permitted", "extra_forbidden")
            for name in sorted(set(given.keys()) - known)
        ]
    return errors, canonical


def _body(given: Body, scope: Scope, raw: bytes) -> tuple[list[Detail], bytes | None]:
    """The body's errors, or the body as pydantic read it (only what was sent)."""
    if not raw:
        if given.required:
            return [detail(["body"], "Field required", "missing", input=None)], None
        return [], None
    if given.media_type == "application/x-www-form-urlencoded":
        value: Any = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        extensions = scope.get("extensions", {})
        value = extensions[_PARSED] if _PARSED in extensions else parse_json(raw)
    try:
        validated = given.adapter.validate_python(value, from_attributes=True)
    except ValidationError as error:
        return _details(error, ["body"], secrets=given.secrets), None
    if given.media_type == "application/x-www-form-urlencoded":
        return [], raw
    return [], json.dumps(
        given.adapter.dump_python(validated, mode="json", exclude_unset=True)
    ).encode()


def _details(
    error: ValidationError,
    prefix: list[str | int],
    *,
    secret: bool = False,
    secrets: Iterable[tuple[str | int, ...]] = (),
) -> list[Detail]:
    """pydantic's errors as FastAPI answers them: ``loc`` under ``prefix``, no ``url``;
    never the ``input`` of a secret, nor of anything holding one."""
    hidden = {tuple(loc) for loc in secrets}
    shown = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        found: Detail = {"type": item["type"], "loc": [*prefix, *loc], "msg": item["msg"]}
        # A secret's own input, or a body (or part of one) that may hold one: not shown.
        container = isinstance(item["input"], dict | list)
        if not (secret or loc in hidden or (hidden and container)):
            found["input"] = _plain(item["input"])
        if "ctx" in item:
            found["ctx"] = {k: _plain(v) for k, v in item["ctx"].items()}
        shown.append(found)
    return shown


def _plain(value: Any) -> Any:
    """JSON's values as they are; anything else (an exception in ``ctx``) as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _canonical_url(scope: Scope, operation: Operation, canonical: Mapping[str, Any]) -> None:
    """Path and query as pydantic read them (``/v1/api-keys/01`` is key 1, ``limit=5.0``
    is 5); unknown query parameters of the v1 API left out, as FastAPI ignores them."""
    path_params = scope.get("path_params", {})
    if path_params:
        given = dict(path_params)
        values = {name: _text(canonical.get(f"path:{name}", v)) for name, v in given.items()}
        root = scope["path"][: len(scope["path"]) - len(_fill(operation.path, given, quoted=False))]
        path_params.update(values)
        scope["path"] = root + _fill(operation.path, values, quoted=False)
        scope["raw_path"] = (root + _fill(operation.path, values, quoted=True)).encode()
    if not operation.console:
        query = [
            (name, _text(canonical[f"query:{name}"]))
            for name, _ in parse_qsl(
                scope.get("query_string", b"").decode(), keep_blank_values=True
            )
            if f"query:{name}" in canonical
        ]
        scope["query_string"] = urlencode(query).encode()


def _fill(template: str, values: Mapping[str, str], *, quoted: bool) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe="") if quoted else value)
    return template


def _text(value: Any) -> str:
    return value.value if hasattr(value, "value") else str(value)
