"""The request scope: what every request of this process shares, bound for its handlers."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane import db
from keyplane.handlers import context


class RequestScope:
    """Binds the runtime and the session factory in context variables.

    Context variables, unlike ``flask.g``, reach the security functions (on the event
    loop) and the thread that runs a handler alike, under ``FlaskApp`` and
    ``AsyncApp``. The transaction itself is the handler's unit of work
    (``keyplane.transactions``), in that thread.
    """

    def __init__(
        self, app: ASGIApp, *, runtime: context.Runtime, sessions: db.session.Sessions
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        routing = scope.get("extensions", {}).get("connexion_routing", {})
        context.note(operation_id=routing.get("operation_id"))
        runtime_token = context.bind(self.runtime)
        sessions_token = db.session.use(self.sessions)
        try:
            await self.app(scope, receive, send)
        finally:
            db.session.unuse(sessions_token)
            context.unbind(runtime_token)
