"""The app factory: settings in, a Connexion ``FlaskApp`` out. Nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import flask
from connexion import FlaskApp
from connexion import context as connexion_context
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import RelativeResolver
from connexion.spec import Specification
from sqlalchemy import Engine, QueuePool
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine
from keyplane.crypto import Secrets
from keyplane.middleware import RequestScope
from keyplane.problems import Problems
from keyplane.requestlog import RequestLog
from keyplane.runtime import Runtime
from keyplane.settings import Settings
from keyplane.validation import VALIDATORS

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "swagger.yaml"
HANDLERS = "handlers"  # operationId `api_keys.update` is handlers/api_keys.py:update


def create_app(
    settings: Settings | None = None, *, sessions: Callable[[], Session] | None = None
) -> FlaskApp:
    """Build the service. ``sessions`` lets tests bind every request to one connection."""
    settings = settings or Settings.from_env()
    settings.check()
    engine = None
    if sessions is None:
        engine = make_engine(settings.database_url)
        sessions = sessionmaker(engine, expire_on_commit=False)
    runtime = Runtime(
        settings=settings, secrets=Secrets.derive(settings.secret_key), sessions=sessions
    )

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        yield
        if engine is not None:
            engine.dispose()  # close pooled connections when the server shuts down

    app = FlaskApp(__name__, specification_dir=SPEC_PATH.parent, lifespan=lifespan)
    # Exceptions from handlers reach Connexion's error handlers (one place shapes them)
    # instead of Flask's generic 500 page.
    app.app.config["PROPAGATE_EXCEPTIONS"] = True
    app.add_api(
        SPEC_PATH.name,
        resolver=RelativeResolver(HANDLERS),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        validator_map=VALIDATORS,
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui"),
    )
    app.app.before_request(_only_requests_connexion_routed)
    spec = Specification.load(SPEC_PATH)
    app.add_middleware(
        RequestLog,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        routes=_routes(spec),
        pool_in_use=_pool_in_use(engine) if engine is not None else None,
    )
    app.add_middleware(RequestScope, position=MiddlewarePosition.BEFORE_SECURITY, runtime=runtime)
    Problems(spec).register(app)
    return app


def _pool_in_use(engine: Engine) -> Callable[[], int]:
    pool = engine.pool
    return pool.checkedout if isinstance(pool, QueuePool) else lambda: 0


def _routes(spec: Specification) -> dict[str, str]:
    """``operationId METHOD /template`` by the name Connexion resolves the operation to."""
    return {
        f"{HANDLERS}.{op['operationId']}": f"{op['operationId']} {method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op
    }


def _only_requests_connexion_routed() -> None:
    """A request Connexion did not route was not authenticated either: it never runs.

    Starlette's router (Connexion's) and Flask's can disagree on odd paths; Schemathesis
    found `/apikeys/a%0A` matching Flask's route alone, reaching a handler unchecked.
    """
    try:
        _ = connexion_context.operation.operation_id
    except RuntimeError:
        flask.abort(404)
