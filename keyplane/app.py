"""The app factory: settings in, one ASGI app out. Nothing happens at import.

Keyplane serves two planes, both built here from the one ``openapi/swagger.yaml``,
with the same validators, error shapes, request ids, logs and metrics:

* the **control plane** (management: keys, users, permissions, audit, the console)
  on Connexion's ``FlaskApp``: synchronous handlers, one transaction each;
* the **data plane** (``/v1/keys/verify``, ``/healthz``, ``/readyz``) on Connexion's
  ``AsyncApp``: ``async`` handlers on the event loop, no request transaction.

``create_app`` serves both behind one entry point that sends data-plane paths to the
data plane; ``create_data_app`` serves the data plane alone, so verification can be
scaled apart from management. Handlers don't know which app serves them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import flask
import yaml
from a2wsgi import WSGIMiddleware
from anyio import CapacityLimiter
from connexion import AsyncApp, FlaskApp
from connexion import context as connexion_context
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.apps.flask import FlaskApi
from connexion.decorators import StarletteDecorator
from connexion.frameworks.flask import flaskify_endpoint, flaskify_path
from connexion.frameworks.starlette import starlettify_path
from connexion.jsonifier import Jsonifier
from connexion.middleware import ConnexionMiddleware, MiddlewarePosition
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.routing import RoutingAPI, RoutingMiddleware
from connexion.middleware.swagger_ui import SwaggerUIAPI, SwaggerUIMiddleware
from connexion.options import SwaggerUIOptions
from connexion.spec import Specification
from connexion.utils import get_function_from_name
from sqlalchemy import Engine, QueuePool
from starlette.responses import RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane import db
from keyplane.background import Flusher
from keyplane.db.batches import Batches
from keyplane.db.crypto import PasswordHashing, Secrets
from keyplane.db.engine import make_engine
from keyplane.db.limits import DatabaseWindows
from keyplane.db.logins import SignIn
from keyplane.db.lookups import lookups_for
from keyplane.db.redis_windows import RedisWindows
from keyplane.db.session import Sessions
from keyplane.db.usage import Usage
from keyplane.deadline import Deadline
from keyplane.guards import DocsPages, Guards
from keyplane.handlers.context import Runtime
from keyplane.leaks import GitHubKeys
from keyplane.middleware import RequestScope
from keyplane.problems import CONSOLE_PREFIX, Problems, error_response, timed_out
from keyplane.requestlog import RequestLog
from keyplane.security import SECURITY_MAP
from keyplane.settings import Settings
from keyplane.transactions import UnitOfWorkResolver
from keyplane.validation import JsonFirst, Validation
from keyplane.webhooks import Sender

# A checkout's openapi/swagger.yaml; an installed package's copy of it (pyproject.toml).
_CHECKOUT_SPEC = Path(__file__).resolve().parent.parent / "openapi" / "swagger.yaml"
SPEC_PATH = (
    _CHECKOUT_SPEC
    if _CHECKOUT_SPEC.exists()
    else Path(__file__).resolve().parent / "openapi" / "swagger.yaml"
)


def spec_schema(name: str) -> dict[str, Any]:
    """One of the spec's component schemas as written: the command line applies the API's
    rules with it (a new password, for one)."""
    schema: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"][name]
    return schema


HANDLERS = "keyplane.handlers"  # operationId `api_keys.update` is handlers/api_keys.py:update
VERIFIER: dict[str, list[str]] = {"VerifierCredential": []}  # verify's security requirement
DOCS = "/docs"  # the documentation site, once built (Swagger UI links to it)


@dataclass(frozen=True)
class Contract:
    """The spec, read once per app: as written, for each plane's Connexion API (and for
    ``/openapi.json``), and resolved, for the routes, the error shapes and the planes.

    The data plane is every path whose handlers are ``async``: the handlers say it, once
    (``UnitOfWorkResolver`` gives them no request transaction for the same reason).
    """

    written: dict[str, Any]
    resolved: Specification
    data_paths: frozenset[str]

    @classmethod
    def load(cls, path: Path = SPEC_PATH, *, verify_open: bool = False) -> Contract:
        written = yaml.safe_load(path.read_text())
        if verify_open:  # KEYPLANE_VERIFY_OPEN: a verifier credential may be left out
            for methods in written["paths"].values():
                for operation in methods.values():
                    if isinstance(operation, dict) and VERIFIER in operation.get("security", []):
                        operation["security"] = [*operation["security"], {}]
        resolved = Specification.from_dict(written)
        by_path: dict[str, list[bool]] = {}
        for path_name, _, operation in _operations(resolved):
            handler = get_function_from_name(f"{HANDLERS}.{operation['operationId']}")
            is_async = inspect.iscoroutinefunction(handler)
            by_path.setdefault(path_name, []).append(is_async)
        data_paths = frozenset(name for name, flags in by_path.items() if all(flags))
        return cls(written, resolved, data_paths)

    def data_plane(self) -> dict[str, Any]:
        """The spec as written, with the data plane's paths only."""
        paths = self.written["paths"]
        return self.written | {"paths": {name: paths[name] for name in sorted(self.data_paths)}}


@dataclass
class Service:
    """One worker process's long-lived parts, opened at start-up and closed at shutdown."""

    settings: Settings
    engine: Engine
    sessions: Sessions
    runtime: Runtime
    flusher: Flusher
    sender: Sender

    @classmethod
    def build(cls, settings: Settings) -> Service:
        settings.check()
        limits = settings.database_limits()
        engine = make_engine(settings.database_url, limits)
        sessions = Sessions.of(engine)
        spenders = CapacityLimiter(settings.threads)
        windows = (
            DatabaseWindows()
            if settings.redis_url is None
            else RedisWindows(settings.redis_url, settings.redis_timeout_seconds)
        )
        runtime = Runtime(
            secrets=Secrets.derive(settings.secret_key, settings.previous_secret_keys),
            lookups=lookups_for(settings.database_url, limits),
            usage=Usage(timedelta(seconds=settings.last_used_resolution_seconds)),
            passwords=PasswordHashing(settings.password_hashes, settings.password_wait_seconds),
            sign_in=SignIn(
                token_ttl=timedelta(seconds=settings.token_ttl_seconds),
                max_attempts=settings.login_max_failures,
                window=timedelta(seconds=settings.login_window_seconds),
                max_attempts_per_address=settings.login_max_failures_per_address,
            ),
            request_timeout_seconds=settings.request_timeout_seconds,
            spenders=spenders,
            spends=Batches(partial(db.limits.spend_together, windows), spenders),
            metrics_here=settings.metrics == "on",
            metrics_token=settings.metrics_token,
            windows=windows,
            webhooks_allow_private=settings.webhooks_allow_private,
            github_leak_keys=GitHubKeys(settings.github_leak_keys),
            leak_report_token=settings.leak_report_token,
        )
        flusher = Flusher(
            runtime.usage,
            sessions,
            settings.last_used_resolution_seconds,
            runtime.windows,
            retention=timedelta(days=settings.usage_retention_days),
        )
        sender = Sender(
            sessions,
            runtime.secrets,
            timeout_seconds=settings.webhooks_timeout_seconds,
            concurrency=settings.webhooks_concurrency,
            allow_private=settings.webhooks_allow_private,
            expiring_within=timedelta(days=settings.webhooks_expiring_days),
        )
        return cls(settings, engine, sessions, runtime, flusher, sender)

    # A server runs one lifespan per worker; tests may run two at once on one app
    # (Schemathesis runs its own beside the test client's), so count them.
    lifespans: int = 0

    async def start(self) -> None:
        self.lifespans += 1
        await self.runtime.lookups.open()
        if self.lifespans == 1:
            self.flusher.start()
            self.sender.start()

    async def stop(self) -> None:
        self.lifespans -= 1
        await self.runtime.lookups.close()
        if self.lifespans == 0:
            self.sender.stop()
            self.flusher.stop()  # the last notes of last use are written here
            self.runtime.windows.close()
            self.engine.dispose()


class Keyplane:
    """The one ASGI entry point: data-plane paths to the data plane, the rest to control."""

    def __init__(
        self, service: Service, contract: Contract, data: ASGIApp, control: ASGIApp | None
    ) -> None:
        self.service = service
        self._data = data
        self._control = control
        self._data_paths = contract.data_paths
        settings = service.settings
        self._docs: ASGIApp | None = None
        if settings.docs_site is not None and control is not None:
            self._docs = Mount(DOCS, StaticFiles(directory=settings.docs_site, html=True))
        guarded = Guards(
            DocsPages(self._dispatch),
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.body_timeout_seconds,
            shape=error_response,
        )
        self._app = RequestLog(
            guarded,
            routes=_routes(contract.resolved),
            pool_in_use=_pool_in_use(service.engine),
            proxies_trusted=bool(settings.trusted_proxies),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._app(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._control is None or scope["path"] in self._data_paths:
            await self._data(scope, receive, send)
        elif self._docs is not None and scope["path"] == DOCS:
            await RedirectResponse(f"{DOCS}/", status_code=308)(scope, receive, send)
        elif self._docs is not None and scope["path"].startswith(f"{DOCS}/"):
            await self._docs(scope, receive, send)
        else:
            await self._control(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.service.start()
        except Exception as error:
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.service.stop()
        await send({"type": "lifespan.shutdown.complete"})

    def test_client(self, **kwargs: Any) -> TestClient:
        return TestClient(self, **kwargs)


def create_app(settings: Settings | None = None) -> Keyplane:
    """Both planes, as ``keyplane serve`` runs them."""
    service = Service.build(settings or Settings.from_env())
    contract = Contract.load(verify_open=service.settings.verify_open)
    return Keyplane(
        service,
        contract,
        data=_data_plane(service, contract, alone=False),
        control=_control_plane(service, contract),
    )


def create_data_app(settings: Settings | None = None) -> Keyplane:
    """The data plane alone (``keyplane serve --plane data``)."""
    service = Service.build(settings or Settings.from_env())
    contract = Contract.load(verify_open=service.settings.verify_open)
    return Keyplane(
        service, contract, data=_data_plane(service, contract, alone=True), control=None
    )


def _control_plane(service: Service, contract: Contract) -> ASGIApp:
    # JSON as the data plane writes it: compact, in the handler's order. Connexion's
    # Flask default indents it, which takes Python's slow, pure-Python encoder.
    app = FlaskApp(
        __name__,
        jsonifier=Jsonifier(json),
        middlewares=_middlewares(swagger_ui=True),
        security_map=SECURITY_MAP,
    )
    app._middleware_app.api_cls = _PlainPathFlaskApi
    # Exceptions from handlers reach Connexion's error handlers (one place shapes them)
    # instead of Flask's generic 500 page.
    app.app.config["PROPAGATE_EXCEPTIONS"] = True
    app.add_api(
        contract.written,
        resolver=UnitOfWorkResolver(HANDLERS),
        validate_responses=service.settings.validate_responses,
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui"),
    )
    app.app.before_request(_only_requests_connexion_routed)
    # Connexion runs Flask behind a2wsgi with a fixed pool of 10 threads (upstream #1979);
    # a few threads keep more throughput, less contention for the GIL and for SQLite's
    # write lock, and a small, known bound on connections (README: sizing).
    app._middleware_app.asgi_app = WSGIMiddleware(
        app.app.wsgi_app, workers=service.settings.threads
    )
    _add_request_scope(app, service)
    Problems(contract.resolved).register(app)
    return Deadline(app, seconds=service.settings.request_timeout_seconds, timed_out=timed_out)


def _data_plane(service: Service, contract: Contract, *, alone: bool) -> ASGIApp:
    # Beside the control plane, which serves the spec and the UI, the data plane gets
    # only its own paths: Connexion's Swagger UI middleware would only match each
    # request against its routes first. Alone, it serves its spec (``/openapi.json``).
    app = AsyncApp(__name__, middlewares=_middlewares(swagger_ui=alone), security_map=SECURITY_MAP)
    app._middleware_app.api_cls = _AsyncApi
    app.add_api(
        contract.data_plane(),
        resolver=UnitOfWorkResolver(HANDLERS),
        validate_responses=service.settings.validate_responses,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=False),
    )
    _add_request_scope(app, service)
    Problems(contract.resolved).register(app)
    return cast(ASGIApp, app)


def _middlewares(*, swagger_ui: bool) -> list[Any]:
    """Connexion's middleware, in FastAPI's order: routing by plain path segments, then
    the JSON body decoded, then credentials, then every parameter and the body judged by
    pydantic at once (``keyplane.validation``), in place of Connexion's validation."""
    shared: dict[str, Any] = {"prefix": f"{HANDLERS}.", "console_prefix": CONSOLE_PREFIX}
    chosen: list[Any] = []
    for middleware in ConnexionMiddleware.default_middlewares:
        if middleware is SwaggerUIMiddleware:
            if swagger_ui:
                chosen.append(_SwaggerUI)
            continue
        if middleware is RoutingMiddleware:
            chosen += [_PlainPathRouting, partial(JsonFirst, **shared)]
        elif middleware is RequestValidationMiddleware:
            chosen.append(partial(Validation, **shared))
        else:
            chosen.append(middleware)
    return chosen


class _SpecWithItsServer(SwaggerUIAPI):  # type: ignore[misc]
    """The spec as served (``/openapi.json``, Swagger UI), its one server described:
    Connexion lists it by its path alone, empty at the root, which Swagger UI offers as a
    blank choice. The path stays as it is: Swagger UI resolves the spec's relative links
    (``externalDocs``) against it, and ``/`` would make ``/docs/`` the host ``docs``."""

    def _spec_for_prefix(self, request: Any) -> dict[str, Any]:
        spec: dict[str, Any] = super()._spec_for_prefix(request)
        base = spec.get("servers", [{}])[0].get("url", "")
        described = {"url": base, "description": "This server, where this page came from"}
        return spec | {"servers": [described]}


class _SwaggerUI(SwaggerUIMiddleware):  # type: ignore[misc]
    def add_api(self, specification: Any, base_path: str | None = None, **kwargs: Any) -> None:
        api = _SpecWithItsServer(
            specification, base_path=base_path, default=self.default_fn, **kwargs
        )
        self.router.mount(api.base_path, app=api.router)


class _PlainPathRouting(RoutingMiddleware):  # type: ignore[misc]
    """Routes by plain path segments: ``/v1/api-keys/abc`` reaches its operation (and its
    credentials are checked first), where an integer route would make it a 404."""

    def add_api(self, specification: Specification, **kwargs: Any) -> None:
        api = _PlainPathRoutingApi(specification, next_app=self.app, **kwargs)
        # As Connexion's own does: an earlier API with the same base path falls back to it.
        for route in self.router.routes:
            if isinstance(route, Mount) and route.path == api.base_path:
                route.app.default = api.router  # type: ignore[attr-defined]
        self.router.mount(api.base_path, app=api.router)


class _PlainPathRoutingApi(RoutingAPI):  # type: ignore[misc]
    @staticmethod
    def _framework_path_and_name(operation: Any, path: str) -> tuple[str, str]:
        plain = starlettify_path(path, {})
        return plain, plain


class _PlainPathFlaskApi(FlaskApi):  # type: ignore[misc]
    """Flask routes by plain segments too; the canonical id comes from validation."""

    @staticmethod
    def _framework_path_and_name(operation: Any, path: str) -> tuple[str, str]:
        return flaskify_path(path, {}), flaskify_endpoint(
            operation.operation_id, operation.randomize_endpoint
        )


class _DecoratedOnce(AsyncOperation):  # type: ignore[misc]
    """An operation wrapped in Connexion's decorators once, not on every request.

    Connexion 3.3's ``AsyncOperation`` builds its decorator chain (inspecting the
    handler's signature) and its URI parser (reading the operation's body definition)
    anew for every request. Neither holds anything of a request (each part reads it from
    the context when called), so once per operation is enough: verify's profile had them
    at about 10 %. The request is built exactly as Connexion's ``ASGIDecorator`` builds
    it; ``pyproject.toml`` holds Connexion to the minor version this mirrors.
    """

    _built: tuple[StarletteDecorator, Any, Callable[..., Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if self._built is None:
            decorator = StarletteDecorator(
                pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
            )
            self._built = (decorator, decorator.uri_parser, decorator.decorate(self._fn))
        decorator, uri_parser, handler = self._built
        request = decorator.framework.get_request(
            uri_parser=uri_parser, scope=connexion_context.scope, receive=connexion_context.receive
        )
        response = await handler(request)
        return await response(scope, receive, send)


class _AsyncApi(AsyncApi):  # type: ignore[misc]
    def make_operation(self, operation: Any) -> AsyncOperation:
        return _DecoratedOnce.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


def _add_request_scope(app: FlaskApp | AsyncApp, service: Service) -> None:
    app.add_middleware(
        RequestScope,
        position=MiddlewarePosition.BEFORE_SECURITY,
        runtime=service.runtime,
        sessions=service.sessions,
    )


def _pool_in_use(engine: Engine) -> Callable[[], int]:
    pool = engine.pool
    return pool.checkedout if isinstance(pool, QueuePool) else lambda: 0


def _routes(spec: Specification) -> dict[str, str]:
    """``operationId METHOD /template`` by the name Connexion resolves the operation to."""
    return {
        f"{HANDLERS}.{op['operationId']}": f"{op['operationId']} {method.upper()} {path}"
        for path, method, op in _operations(spec)
    }


def _operations(spec: Specification) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                yield path, method, operation


def _only_requests_connexion_routed() -> None:
    """A request Connexion did not route was not authenticated either: it never runs.

    Starlette's router (Connexion's) and Flask's can disagree on odd paths; Schemathesis
    found `/apikeys/a%0A` matching Flask's route alone, reaching a handler unchecked.
    """
    try:
        _ = connexion_context.operation.operation_id
    except RuntimeError:
        flask.abort(404)
