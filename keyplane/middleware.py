"""The request scope: one database session per request, committed or rolled back here only."""

from __future__ import annotations

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import db.session
from keyplane import requestlog, runtime
from keyplane.errors import KeyplaneError


class RequestScope:
    """Opens the request's session and owns its transaction.

    The outcome is decided when the response starts, *before* it is sent: a client
    that has seen 2xx can rely on the change being committed (the very next request,
    on any worker, sees it). A status of 400 or more rolls back (unless the handler
    asked to keep a record of the refusal, ``db.session.keep_writes_on_refusal``);
    so does an exception,
    which the error handlers above then turn into a 500. If the commit itself fails,
    nothing has been sent yet, so the client gets that 500 rather than a false 2xx.
    """

    def __init__(self, app: ASGIApp, *, runtime: runtime.Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        routing = scope.get("extensions", {}).get("connexion_routing", {})
        requestlog.note(operation_id=routing.get("operation_id"))
        session = self.runtime.sessions()
        runtime_token = runtime.bind(self.runtime)
        session_token = db.session.bind(session)
        decided = False

        async def send_after_deciding(message: Message) -> None:
            nonlocal decided
            if message["type"] == "http.response.start" and not decided:
                decided = True
                if message["status"] < 400 or db.session.keeps_writes_on_refusal(session):
                    await to_thread.run_sync(session.commit)
                else:
                    await to_thread.run_sync(session.rollback)
            await send(message)

        try:
            await self.app(scope, receive, send_after_deciding)
        except BaseException as error:
            # Errors reach here before the handlers above turn them into responses.
            if not decided:
                decided = True
                keep = isinstance(error, KeyplaneError) and error.status < 500
                if keep and db.session.keeps_writes_on_refusal(session):
                    await to_thread.run_sync(session.commit)
                else:
                    await to_thread.run_sync(session.rollback)
            raise
        finally:
            await to_thread.run_sync(session.close)
            db.session.unbind(session_token)
            runtime.unbind(runtime_token)
